// The link graph (cytoscape.js, vendored): customers and the tokens they used, fetched as JSON from the element's
// data-src. Click a node to expand it (its neighbours are fetched and added) and to see what it is, with a link to
// its page; double-click opens the page. Hubs (tokens too widely used to be a ring) are one grey node with a count.
(function () {
  "use strict";
  var box = document.getElementById("graph");
  if (!box || typeof cytoscape !== "function") return;
  var info = document.getElementById("graph-info");
  var MAX_DRAWN = 400;  // expanding stops here: past it a page says more than a drawing
  var KIND_COLOUR = { address: "#2b6cb0", payment: "#805ad5", device: "#25704b", refund: "#8a5a10" };

  // an id in a path, fully encoded: a token starting with "/" or an id such as "../x" stays one segment
  function part(id) { return encodeURIComponent(id).replace(/\./g, "%2E"); }
  function pageOf(kind, id) {
    return kind === "customer" ? "/ui/customers/" + part(id) : "/ui/tokens/" + kind + "/" + part(id);
  }
  function label(n) {
    var short = n.id.length > 14 ? n.id.slice(0, 12) + "…" : n.id;
    return n.hub ? n.kind + " hub · " + n.customers : short;
  }
  function elements(data) {
    var out = [];
    data.nodes.forEach(function (n) {
      out.push({ group: "nodes", data: { id: n.key, kind: n.kind, value: n.id, label: label(n), hop: n.hop,
        customers: n.customers, bad: n.bad_labels, hub: n.hub, seed: n.seed, expanded: n.expanded,
        colour: n.kind === "customer" ? (n.bad_labels ? "#c53030" : "#627d98") : (n.hub ? "#9fb3c8" : KIND_COLOUR[n.kind]) },
        classes: [n.kind === "customer" ? "customer" : "token", n.bad_labels ? "bad" : "", n.hub ? "hub" : "",
          n.seed ? "seed" : ""].join(" ") });
    });
    data.edges.forEach(function (e) {
      // ids may hold "|" and ":": customer + "|" + token gave two edges one id (one was dropped) and could equal a
      // node's key; a JSON pair under a prefix no node key has is one id per edge
      out.push({ group: "edges", data: { id: "edge " + JSON.stringify([e.customer, e.token]), source: e.customer,
        target: e.token } });
    });
    return out;
  }
  function describe(node) {
    var d = node.data();
    var what = d.kind === "customer"
      ? "Customer " + d.value + (d.bad ? " · " + d.bad + " return(s) labelled fraud or abuse" : "")
      : (d.hub ? "Hub " : "") + d.kind + " token " + d.value + " · used by " + d.customers + " customer(s)";
    info.textContent = "";
    var text = document.createElement("span");
    text.textContent = what + (d.seed ? " (this page's)" : "") + " · ";
    var link = document.createElement("a");
    link.href = pageOf(d.kind, d.value);
    link.id = "graph-open";
    link.textContent = "open its page";
    info.appendChild(text);
    info.appendChild(link);
  }
  function layout(cy) {
    // rings by distance from where the graph starts, then a force-directed pass from there (no randomness: the
    // same graph is drawn the same way every time)
    cy.layout({ name: "concentric", concentric: function (n) { return 10 - n.data("hop"); },
      levelWidth: function () { return 1; }, minNodeSpacing: 18, animate: false }).run();
    cy.layout({ name: "cose", randomize: false, animate: false, idealEdgeLength: function () { return 45; },
      nodeRepulsion: function () { return 9000; }, numIter: 1500, fit: true, padding: 20 }).run();
  }

  fetch(box.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(function (data) {
      var cy = cytoscape({
        container: box, elements: elements(data), maxZoom: 1.5,  // a small graph is not drawn huge
        style: [
          { selector: "node", style: { "background-color": "data(colour)", label: "data(label)", "font-size": 9,
            color: "#1f2933", "text-valign": "bottom", "text-margin-y": 3, width: 18, height: 18 } },
          { selector: "node.token", style: { shape: "round-rectangle", width: 14, height: 14 } },
          { selector: "node.hub", style: { shape: "round-rectangle", width: 26, height: 26 } },
          { selector: "node.seed", style: { "border-width": 3, "border-color": "#1f2933" } },
          { selector: "node:selected", style: { "border-width": 3, "border-color": "#2f80ed" } },
          { selector: "edge", style: { width: 1, "line-color": "#bcccdc", "curve-style": "straight" } }
        ]
      });
      layout(cy);
      if (data.capped) {
        info.textContent = "The graph is capped at " + data.max_nodes + " nodes: some neighbours are left out.";
      }
      cy.on("tap", "node", function (evt) {
        var node = evt.target;
        describe(node);
        if (node.data("expanded") || node.data("hub")) return;
        if (cy.nodes().length >= MAX_DRAWN) {
          info.textContent = "The graph holds " + cy.nodes().length + " nodes: open a page to look further.";
          return;
        }
        var url = "/ui/graph/" + node.data("kind") + "/" + part(node.data("value")) + "?hops=1";
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        }).then(function (more) {
          var fresh = elements(more).filter(function (el) { return cy.getElementById(el.data.id).empty(); });
          fresh.forEach(function (el) { if (el.group === "nodes") el.data.hop = node.data("hop") + 1; });
          cy.add(fresh);
          node.data("expanded", true);
          layout(cy);
          box.setAttribute("data-expanded", String(cy.nodes("[?expanded]").length));
        }).catch(function (err) { info.textContent = "Could not expand it (" + err.message + ")."; });
      });
      cy.on("dbltap", "node", function (evt) { window.location = pageOf(evt.target.data("kind"), evt.target.data("value")); });
      window.fraudGraph = cy;  // the browser tests find nodes through it
      box.setAttribute("data-ready", "true");
    })
    .catch(function (err) { info.textContent = "The graph could not be loaded (" + err.message + ")."; });
})();
