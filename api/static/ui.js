// Keyboard shortcuts for the analyst UI (no libraries): j/k move, Enter opens, n next case, / search, m note, c close,
// u queue.
(function () {
  "use strict";
  function typing(e) {
    var t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-href]"));
  var current = rows.length ? 0 : -1;
  function select(i) {
    if (!rows.length) return;
    if (current >= 0) rows[current].classList.remove("selected");
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows[current].classList.add("selected");
    rows[current].scrollIntoView({ block: "nearest" });
  }
  if (rows.length) select(0);
  rows.forEach(function (row, i) {
    row.addEventListener("click", function (e) {
      if (e.target.closest("input, a, button, label")) return;
      window.location = row.getAttribute("data-href");
    });
  });
  document.addEventListener("keydown", function (e) {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    var form;
    if (e.key === "j") { select(current + 1); }
    else if (e.key === "k") { select(current - 1); }
    else if (e.key === "Enter" && current >= 0 && rows.length) { window.location = rows[current].getAttribute("data-href"); }
    else if (e.key === "n") { form = document.getElementById("next-form"); if (form) form.submit(); }
    else if (e.key === "/") { form = document.getElementById("search-box"); if (form) { e.preventDefault(); form.focus(); } }
    else if (e.key === "m") { form = document.getElementById("note-body"); if (form) { e.preventDefault(); form.focus(); } }
    else if (e.key === "c") { form = document.getElementById("close-reason"); if (form) { e.preventDefault(); form.focus(); } }
    else if (e.key === "u") { window.location = "/ui/"; }
    else { return; }
  });
  // "select all" on the queue
  var all = document.getElementById("select-all");
  if (all) all.addEventListener("change", function () {
    document.querySelectorAll("input[name=case_id]").forEach(function (c) { c.checked = all.checked; });
  });
  // a return's link in the case summary opens its details (no inline handlers: the pages' CSP forbids them)
  document.querySelectorAll("a[data-opens]").forEach(function (link) {
    link.addEventListener("click", function () {
      var details = document.getElementById(link.getAttribute("data-opens"));
      if (details) details.open = true;
    });
  });
  // one label for every return of the case
  var every = document.getElementById("label-all");
  if (every) every.addEventListener("change", function () {
    document.querySelectorAll("select[data-disposition]").forEach(function (s) { s.value = every.value; });
  });
})();
