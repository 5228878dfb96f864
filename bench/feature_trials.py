"""Try a feature or a training choice before building it into the store: the project's own point-in-time frame,
with candidate features prototyped in DuckDB beside it, trained the way `train` trains and judged on the truth.

For each world it ingests the data and builds the features with the CLI (once per --work directory), reads the
project's historical frame for every return, adds the candidates' columns, then, per variant, trains with the
project's `fit` (same rows, labels, weights and validation as `train --train-until CUTOFF`) and scores the four
months after against the injected truth: average precision and the share of each kind in the top 5%. It prints
each variant's AP as a ratio to `base` per world and the mean, wins and losses over all worlds, then each kind's
share of the top 5% per variant.

A variant is parts joined by `+`:
- `base`: the model's features as served;
- a candidate name (below): its columns added;
- `-PREFIX`: the model's features starting with PREFIX left out;
- `KEY=VALUE`: a TrainConfig field (e.g. `ensemble=1`, `contradicted=1.0`, `learning_rate=0.02`,
  `unlabelled=legit`);
- `nomono`: no monotone constraints.

Candidates (each point in time: only facts strictly before the request):
- `sku`, `category`: the order's lines' earlier return, claim and failed-inspection rates (smoothed), max and
  value-weighted;
- `link`: the graph of shared tokens (orders' address, card, device; refunds' destination): the customer's
  neighbours through tokens held by at most 20 customers (hub damping), neighbours with a bad label known then,
  time-decayed (180 days) and as a share, distinct customers within two hops, hub tokens held;
- `seen`: days since this customer first used the order's device, address and card and the refund destination
  (-1: a destination new to them), days since anyone first used the device or address, since the customer's first
  order;
- `changes`: devices and addresses the customer started using in the last 30 days, refund destinations in 90,
  and all they ever used;
- `zscore`: the refund and the days from delivery against the customer's own earlier returns (z-scores);
- `unit`: the refund per claimed unit, against the order's average unit and its dearest unit price, and the share
  of the order's units claimed.

    .venv/bin/python bench/feature_trials.py --worlds generated-0.01:1 generated-0.03:1 uci-injection:1 \\
        --variants base link seen ensemble=1 [--config KEY=VALUE ...] [--work DIR] [--json FILE]

Worlds: `generated-SHARE:SEED` (the generator, 6,000 customers, 365 days, cutoff 120 days before the end),
`uci-injection:SEED`, `uci-second:SEED` and `uci-third:SEED` (Online Retail with each injector, cutoff 2011-09-01).
The second and third injectors are the held-out proxies: choices are made on the others (docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
from features.pipeline import BAD_OUTCOMES  # noqa: E402  (after the path above)

SOURCE = ROOT.parent / "shared" / "data" / "online_retail.parquet"
UCI_CUTOFF = pd.Timestamp("2011-09-01", tz="UTC")
UCI_END = pd.Timestamp("2012-01-01", tz="UTC")
HUB = 20
"""A token held by more customers than this links nobody (a freight forwarder, a shop's card terminal)."""
FAILED = "(" + ", ".join(f"'{outcome}'" for outcome in BAD_OUTCOMES) + ")"
"""The failed inspection outcomes, as an SQL list."""


def _cli(*argv: str) -> None:
    from api.cli.main import main as cli

    if cli(["-q", *argv]) != 0:
        raise SystemExit(f"fraud-service {' '.join(argv)} failed")


def dataset(world: str, work: Path) -> tuple[Path, pd.Timestamp, pd.Timestamp]:
    """The dataset directory of WORLD (made once under WORK), its cutoff and the end of its test window."""
    kind, _, seed_text = world.partition(":")
    seed = int(seed_text)
    out = work / "data" / f"{kind}-{seed}"
    if kind.startswith("generated-"):
        from training.datasets.synthetic import WorldConfig, generate

        config = WorldConfig(customers=6000, days=365, seed=seed, start="2025-01-01",
                             fraud_share=float(kind.removeprefix("generated-")))
        if not out.exists():
            generate(config, out)
        end = config.start_ts() + pd.Timedelta(days=365)
        return out, end - pd.Timedelta(days=120), end
    if kind not in ("uci-injection", "uci-second", "uci-third"):
        raise SystemExit(f"unknown world {world!r}: generated-SHARE:SEED, uci-injection:SEED, uci-second:SEED or "
                         "uci-third:SEED")
    uci = work / "data" / "uci"
    if not uci.exists():
        _cli("import-online-retail", str(SOURCE), "--out", str(uci))
    if not out.exists():
        if kind == "uci-injection":
            from training.datasets.injection import InjectionConfig, inject

            inject(uci, out, InjectionConfig(seed=seed))
        elif kind == "uci-third":
            from training.datasets.third_injection import ThirdInjectionConfig, inject_third

            inject_third(uci, out, ThirdInjectionConfig(seed=seed))
        else:
            from training.datasets.second_injection import SecondInjectionConfig, inject_second

            inject_second(uci, out, SecondInjectionConfig(seed=seed))
    return out, UCI_CUTOFF, UCI_END


def project_frame(world: str, work: Path) -> tuple[pd.DataFrame, Any, Path, pd.Timestamp, pd.Timestamp]:
    """Every return of WORLD with the project's point-in-time features (cached under WORK), its snapshot,
    dataset, cutoff and test end."""
    from fraud_service.config import Settings
    from fraud_service.featurestore.source import FeatureSource
    from training.trainset import Window, current_snapshot, feature_frame, time_range

    data, cutoff, end = dataset(world, work)
    home = work / "home" / world.replace(":", "-")
    os.environ["FRAUD_HOME"] = str(home)
    os.environ.pop("FRAUD_MODEL_DIR", None)
    cache = home / "frame.parquet"
    if not cache.exists():
        _cli("ingest", str(data))
        _cli("features", "build")
        settings = Settings.from_env()
        snapshot = current_snapshot(settings.warehouse_dir)
        first, last = time_range(snapshot)
        feature_frame(FeatureSource(settings), snapshot,
                      Window(first, last + pd.Timedelta(microseconds=1))).to_parquet(cache)
    snapshot = current_snapshot(Settings.from_env().warehouse_dir)
    return pd.read_parquet(cache), snapshot, data, cutoff, end


def connect(snapshot: Any) -> duckdb.DuckDBPyConnection:
    """The snapshot's tables as views, and `q`: one row per return with its order's tokens and its time `t`."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in ("customers", "orders", "order_items", "returns", "labels", "inspections"):
        path = snapshot.table_path(table)
        if path is not None:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
        elif table == "inspections":
            con.execute("CREATE TABLE inspections (return_id VARCHAR, inspected_at TIMESTAMPTZ, outcome VARCHAR)")
        elif table == "labels":
            con.execute("CREATE TABLE labels (return_id VARCHAR, label VARCHAR, labelled_at TIMESTAMPTZ, "
                        "source VARCHAR)")
    con.execute("""CREATE TEMP TABLE q AS
        SELECT r.return_id, r.order_id, r.customer_id, r.requested_at AS t, r.refund_amount, r.refund_token,
               o.device_token, o.address_token, o.payment_token, o.delivered_at
        FROM returns r JOIN orders o USING (order_id)""")
    return con


CANDIDATES: dict[str, Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]] = {}


def candidate(name: str) -> Callable[[Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]],
                                     Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]]:
    def register(fn: Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]
                 ) -> Callable[[duckdb.DuckDBPyConnection], pd.DataFrame]:
        CANDIDATES[name] = fn
        return fn
    return register


def _item_rates(con: duckdb.DuckDBPyConnection, level: str) -> pd.DataFrame:
    """Per return, over its order's lines: each line's LEVEL (sku or category) as known before the request:
    orders holding it, returns and claims of those orders, and failed inspections of those returns."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE item_events AS
        SELECT i.{level} AS k, o.placed_at AS ts, 1 AS n_o, 0 AS n_r, 0 AS n_c, 0 AS n_b
          FROM order_items i JOIN orders o USING (order_id)
        UNION ALL SELECT i.k, r.requested_at, 0, 1, (r.return_type <> 'return')::INT, 0
          FROM returns r JOIN (SELECT DISTINCT order_id, {level} AS k FROM order_items) i USING (order_id)
        UNION ALL SELECT i.k, x.inspected_at, 0, 0, 0, (x.outcome IN {FAILED})::INT
          FROM inspections x JOIN returns r USING (return_id)
          JOIN (SELECT DISTINCT order_id, {level} AS k FROM order_items) i USING (order_id)""")
    # running totals, one row per (key, time): the last row at a time holds every fact of that time
    con.execute("""CREATE OR REPLACE TEMP TABLE item_totals AS
        SELECT k, ts, sum(o) OVER w AS o, sum(r) OVER w AS r, sum(c) OVER w AS c, sum(b) OVER w AS b
        FROM (SELECT k, ts, sum(n_o) AS o, sum(n_r) AS r, sum(n_c) AS c, sum(n_b) AS b FROM item_events GROUP BY ALL)
        WINDOW w AS (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING)""")
    return con.sql(f"""
        WITH lines AS (SELECT q.return_id, q.t, i.{level} AS k, i.unit_price * i.quantity AS v
                       FROM q JOIN order_items i USING (order_id)),
        known AS (SELECT lines.*, coalesce(c.o, 0) AS o, coalesce(c.r, 0) AS r, coalesce(c.c, 0) AS c,
                         coalesce(c.b, 0) AS b
                  FROM lines ASOF LEFT JOIN item_totals c ON lines.k = c.k AND lines.t > c.ts)
        SELECT return_id,
               max((r + 0.2) / (o + 2)) AS {level}_return_rate_max,
               sum(v * (r + 0.2) / (o + 2)) / nullif(sum(v), 0) AS {level}_return_rate_vw,
               max((c + 0.05) / (o + 5)) AS {level}_claim_rate_max,
               max((b + 0.05) / (r + 5)) AS {level}_failed_rate_max,
               sum(v * (b + 0.05) / (r + 5)) / nullif(sum(v), 0) AS {level}_failed_rate_vw,
               min(o) AS {level}_least_orders
        FROM known GROUP BY return_id""").df()


@candidate("sku")
def sku(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _item_rates(con, "sku")


@candidate("category")
def category(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _item_rates(con, "category")


def _edges(con: duckdb.DuckDBPyConnection) -> None:
    """`edges`: each (token, customer) pair with when it was first seen; `first_bad`: each customer's first bad
    label's time."""
    con.execute("""CREATE OR REPLACE TEMP TABLE edges AS
        SELECT 'a:' || address_token AS tok, customer_id AS c, min(placed_at) AS seen FROM orders
          WHERE address_token IS NOT NULL GROUP BY ALL
        UNION ALL SELECT 'p:' || payment_token, customer_id, min(placed_at) FROM orders
          WHERE payment_token IS NOT NULL GROUP BY ALL
        UNION ALL SELECT 'd:' || device_token, customer_id, min(placed_at) FROM orders
          WHERE device_token IS NOT NULL GROUP BY ALL
        UNION ALL SELECT 'r:' || refund_token, customer_id, min(requested_at) FROM returns
          WHERE refund_token IS NOT NULL GROUP BY ALL""")
    con.execute("""CREATE OR REPLACE TEMP TABLE first_bad AS
        SELECT r.customer_id AS c, min(l.labelled_at) AS at FROM labels l JOIN returns r USING (return_id)
        WHERE l.label IN ('fraud', 'abuse') GROUP BY ALL""")


@candidate("link")
def link(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    _edges(con)
    return con.sql(f"""
        WITH t1 AS (SELECT q.return_id, q.customer_id AS c0, q.t, e.tok
                    FROM q JOIN edges e ON e.c = q.customer_id AND e.seen < q.t),
        m1 AS (SELECT t1.return_id, t1.c0, t1.t, t1.tok, count(*) AS members
               FROM t1 JOIN edges e ON e.tok = t1.tok AND e.seen < t1.t GROUP BY ALL),
        n1 AS (SELECT DISTINCT m1.return_id, m1.t, m1.c0, e.c
               FROM m1 JOIN edges e ON e.tok = m1.tok AND e.seen < m1.t AND e.c <> m1.c0 WHERE m1.members <= {HUB}),
        t2 AS (SELECT DISTINCT n1.return_id, n1.t, n1.c0, e.tok FROM n1 JOIN edges e ON e.c = n1.c AND e.seen < n1.t),
        m2 AS (SELECT t2.return_id, t2.c0, t2.t, t2.tok, count(*) AS members
               FROM t2 JOIN edges e ON e.tok = t2.tok AND e.seen < t2.t GROUP BY ALL),
        n2 AS (SELECT m2.return_id, count(DISTINCT e.c) AS two_hop
               FROM m2 JOIN edges e ON e.tok = m2.tok AND e.seen < m2.t AND e.c <> m2.c0
               WHERE m2.members <= {HUB} GROUP BY ALL),
        nb AS (SELECT n1.return_id, count(*) AS neighbours, sum((b.at < n1.t)::INT) AS bad,
                      sum(CASE WHEN b.at < n1.t THEN exp(-epoch(n1.t - b.at) / 86400 / 180) ELSE 0 END) AS bad_decayed
               FROM n1 LEFT JOIN first_bad b ON b.c = n1.c GROUP BY ALL),
        hubs AS (SELECT return_id, count(*) AS tokens, sum((members > {HUB})::INT) AS hub_tokens FROM m1 GROUP BY ALL)
        SELECT q.return_id, coalesce(nb.neighbours, 0) AS lk_neighbours, coalesce(nb.bad, 0) AS lk_bad_neighbours,
               coalesce(nb.bad_decayed, 0) AS lk_bad_decayed,
               coalesce(nb.bad, 0) / greatest(coalesce(nb.neighbours, 0), 1) AS lk_bad_share,
               coalesce(n2.two_hop, 0) AS lk_two_hop, coalesce(h.tokens, 0) AS lk_tokens,
               coalesce(h.hub_tokens, 0) AS lk_hub_tokens
        FROM q LEFT JOIN nb USING (return_id) LEFT JOIN n2 USING (return_id) LEFT JOIN hubs h USING (return_id)""").df()


@candidate("seen")
def seen(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    def first(token: str, table: str = "orders", at: str = "placed_at", by_customer: bool = True) -> str:
        who = ", customer_id AS c" if by_customer else ""
        return f"SELECT {token} AS tok{who}, min({at}) AS s FROM {table} WHERE {token} IS NOT NULL GROUP BY ALL"

    return con.sql(f"""
        WITH fd AS ({first('device_token')}), fa AS ({first('address_token')}), fp AS ({first('payment_token')}),
        fr AS ({first('refund_token', 'returns', 'requested_at')}),
        gd AS ({first('device_token', by_customer=False)}), ga AS ({first('address_token', by_customer=False)}),
        cf AS (SELECT customer_id AS c, min(placed_at) AS s FROM orders GROUP BY ALL)
        SELECT q.return_id,
               CASE WHEN fd.s < q.t THEN epoch(q.t - fd.s) / 86400 END AS seen_device_days,
               CASE WHEN fa.s < q.t THEN epoch(q.t - fa.s) / 86400 END AS seen_address_days,
               CASE WHEN fp.s < q.t THEN epoch(q.t - fp.s) / 86400 END AS seen_payment_days,
               CASE WHEN q.refund_token IS NULL THEN NULL WHEN fr.s < q.t THEN epoch(q.t - fr.s) / 86400 ELSE -1 END
                   AS seen_refund_days,
               CASE WHEN gd.s < q.t THEN epoch(q.t - gd.s) / 86400 END AS device_age_days,
               CASE WHEN ga.s < q.t THEN epoch(q.t - ga.s) / 86400 END AS address_age_days,
               CASE WHEN cf.s < q.t THEN epoch(q.t - cf.s) / 86400 END AS first_order_days
        FROM q LEFT JOIN fd ON fd.tok = q.device_token AND fd.c = q.customer_id
               LEFT JOIN fa ON fa.tok = q.address_token AND fa.c = q.customer_id
               LEFT JOIN fp ON fp.tok = q.payment_token AND fp.c = q.customer_id
               LEFT JOIN fr ON fr.tok = q.refund_token AND fr.c = q.customer_id
               LEFT JOIN gd ON gd.tok = q.device_token LEFT JOIN ga ON ga.tok = q.address_token
               LEFT JOIN cf ON cf.c = q.customer_id""").df()


@candidate("changes")
def changes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    _edges(con)
    return con.sql("""
        SELECT q.return_id,
          count(*) FILTER (WHERE e.seen < q.t AND e.seen >= q.t - INTERVAL 30 DAY AND e.tok LIKE 'd:%')
              AS new_devices_30d,
          count(*) FILTER (WHERE e.seen < q.t AND e.seen >= q.t - INTERVAL 30 DAY AND e.tok LIKE 'a:%')
              AS new_addresses_30d,
          count(*) FILTER (WHERE e.seen < q.t AND e.seen >= q.t - INTERVAL 90 DAY AND e.tok LIKE 'r:%')
              AS new_refund_destinations_90d,
          count(*) FILTER (WHERE e.seen < q.t AND e.tok LIKE 'd:%') AS devices_ever,
          count(*) FILTER (WHERE e.seen < q.t AND e.tok LIKE 'a:%') AS addresses_ever
        FROM q LEFT JOIN edges e ON e.c = q.customer_id GROUP BY q.return_id""").df()


@candidate("zscore")
def zscore(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.sql("""
        WITH prior AS (
            SELECT a.return_id, avg(b.refund_amount) AS m, stddev_samp(b.refund_amount) AS s,
                   avg(epoch(b.t - b.delivered_at) / 86400) AS dm,
                   stddev_samp(epoch(b.t - b.delivered_at) / 86400) AS ds
            FROM q a JOIN q b ON b.customer_id = a.customer_id AND b.t < a.t GROUP BY a.return_id)
        SELECT q.return_id, (q.refund_amount - p.m) / nullif(p.s, 0) AS refund_z,
               (epoch(q.t - q.delivered_at) / 86400 - p.dm) / nullif(p.ds, 0) AS days_to_return_z
        FROM q LEFT JOIN prior p USING (return_id)""").df()


@candidate("unit")
def unit(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """What one claimed unit is worth: the refund per unit claimed, against the order's average unit and its dearest
    unit price, and the share of the order's units claimed (an item switch or an empty box goes for the dear
    pieces; an honest partial return sends back what did not fit)."""
    return con.sql("""
        WITH o AS (SELECT order_id, sum(unit_price * quantity) AS v, sum(quantity) AS u, max(unit_price) AS top
                   FROM order_items GROUP BY order_id)
        SELECT q.return_id, q.refund_amount / greatest(r.items_count, 1) AS unit_refund,
               (q.refund_amount / greatest(r.items_count, 1)) / nullif(o.v / nullif(o.u, 0), 0) AS unit_to_order_unit,
               (q.refund_amount / greatest(r.items_count, 1)) / nullif(o.top, 0) AS unit_to_top_unit,
               r.items_count / nullif(o.u, 0) AS units_claimed_share
        FROM q JOIN returns r USING (return_id) LEFT JOIN o ON o.order_id = q.order_id""").df()


def run(world: str, variants: list[str], work: Path, common: tuple[str, ...] = ()) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    import training.trainer as trainer
    from fraud_service.scoring.model import Scorer
    from training.trainset import model_features
    from training.workflow import learnable_rows, matured, plan

    frame, snapshot, data, cutoff, end = project_frame(world, work)
    con = connect(snapshot)
    added: dict[str, list[str]] = {}
    for name in sorted({part for variant in variants for part in variant.split("+") if part in CANDIDATES}):
        t0 = time.perf_counter()
        columns = CANDIDATES[name](con)
        added[name] = [c for c in columns.columns if c != "return_id"]
        frame = frame.merge(columns, on="return_id", how="left", validate="1:1")
        print(f"  {world} {name}: {len(added[name])} columns in {time.perf_counter() - t0:.1f}s", flush=True)
    frame = frame.sort_values(["requested_at", "return_id"], kind="stable").reset_index(drop=True)
    windows = plan(snapshot, cutoff)
    test = frame[(frame["requested_at"] >= cutoff) & (frame["requested_at"] < end)].reset_index(drop=True)
    truth = pd.read_parquet(data / "ground_truth.parquet", columns=["return_id", "truth", "typology"])
    test = test.merge(truth, on="return_id", how="left", validate="1:1")
    bad = (test["truth"] != "legit").to_numpy()
    results: dict[str, Any] = {}
    for variant in variants:
        features, config, monotone = list(model_features()), trainer.TrainConfig(), trainer.MONOTONE_UP
        for part in [*common, *variant.split("+")]:
            if part in CANDIDATES:
                features += added[part]
            elif part.startswith("-"):
                features = [f for f in features if not f.startswith(part[1:])]
            elif "=" in part:
                key, _, value = part.partition("=")
                current = getattr(config, key)
                typed = value.lower() in ("1", "true") if isinstance(current, bool) else type(current)(value)
                config = dataclasses.replace(config, **{key: typed})
            elif part == "nomono":
                monotone = ()
            elif part != "base":
                raise SystemExit(f"unknown variant part {part!r}")
        rows, y, weights = learnable_rows(frame, snapshot, windows.start, cutoff, windows.delay, config)
        saved, trainer.MONOTONE_UP = trainer.MONOTONE_UP, monotone
        try:
            trained = trainer.fit(rows, y, features, config, weights, mature=matured(rows, cutoff, windows.delay))
        finally:
            trainer.MONOTONE_UP = saved
        scorer = Scorer("trial", trained.manifest_part(), trained.model_text)
        scores = scorer.raw(scorer.matrix(test)) if len(test) > 1 else np.array([])
        top = np.zeros(len(test), dtype=bool)
        top[np.argsort(-scores, kind="stable")[:int(np.ceil(len(test) * 0.05))]] = True
        kinds = {str(k): round(float(top[(test["typology"] == k).to_numpy()].mean()), 3)
                 for k in sorted(test["typology"].unique()) if k != "legit"}
        results[variant] = {"ap": float(average_precision_score(bad, scores)), "top_share": kinds}
        print(f"{world} {variant}: AP {results[variant]['ap']:.4f} {kinds}", flush=True)
    con.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="+", required=True, help="generated-SHARE:SEED, uci-injection:SEED, ...")
    parser.add_argument("--variants", nargs="+", default=["base", *CANDIDATES])
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="TrainConfig fields changed for every variant, base included (e.g. ensemble=1 to "
                             "screen features three times faster)")
    parser.add_argument("--work", help="keep datasets and built features here, to reuse them (default: a temp dir)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if "base" not in args.variants:
        args.variants.insert(0, "base")
    with tempfile.TemporaryDirectory(prefix="feature-trials-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        results = {world: run(world, args.variants, work, tuple(args.config)) for world in args.worlds}
    print(f"\n== AP as a ratio to base, per world ({', '.join(args.worlds)})")
    for variant in args.variants:
        ratios = [results[w][variant]["ap"] / results[w]["base"]["ap"] for w in args.worlds]
        wins, losses = sum(r > 1.0005 for r in ratios), sum(r < 0.9995 for r in ratios)
        print(f"  {variant:<32} mean {np.mean(ratios):.4f}  better in {wins}, worse in {losses}  "
              f"({' '.join(f'{r:.3f}' for r in ratios)})")
    _kinds(results, args.variants)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _kinds(results: dict[str, Any], variants: list[str]) -> None:
    """Each kind's share of the top 5%, mean over the worlds that hold it: a candidate can lift one kind and cost
    the mean."""
    kinds = sorted({k for world in results.values() for k in world["base"]["top_share"]})
    print("\n== share of each kind in the top 5%, mean over the worlds holding it")
    print(f"  {'kind':<22}" + "".join(f"{v[:14]:>15}" for v in variants))
    for kind in kinds:
        cells = [np.mean([w[v]["top_share"][kind] for w in results.values() if kind in w[v]["top_share"]])
                 for v in variants]
        print(f"  {kind:<22}" + "".join(f"{c:>15.3f}" for c in cells))


if __name__ == "__main__":
    main()
