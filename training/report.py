"""Evaluation reports: one self-contained HTML page (inline SVG plots) and the same figures as JSON."""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Policy

SHAP_ROWS = 2000
MODEL_TOKEN = "{{model_version}}"
POLICY_TOKEN = "{{policy_version}}"
"""Placeholders for names known only once the model is registered (the report is written first)."""
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #eef;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f6fa}.grid{display:flex;flex-wrap:wrap;gap:1rem}
.grid>figure{margin:0;flex:1 1 480px}figcaption{color:#556;font-size:.9rem}.note{color:#556}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else (f"{value:,.4f}" if abs(value) < 10 else f"{value:,.0f}")
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pr_curves(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Precision-recall curve points per candidate (thinned to at most 200 points)."""
    from sklearn.metrics import precision_recall_curve

    out = {}
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(y, score)
        keep = np.unique(np.linspace(0, len(precision) - 1, min(200, len(precision))).astype(int))
        out[name] = {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}
    return out


def importance(scorer: Scorer, top: int = 20) -> list[tuple[str, float]]:
    gain = scorer.booster.feature_importance(importance_type="gain")
    order = np.argsort(-gain)[:top]
    return [(scorer.features[i], float(gain[i])) for i in order]


def shap_summary(scorer: Scorer, frame: pd.DataFrame) -> tuple[list[tuple[str, float]], str]:
    """Mean |SHAP| per feature (computed with the shap package) and its summary (beeswarm) plot."""
    import shap

    plt = _plt()
    sample = frame.sample(n=min(SHAP_ROWS, len(frame)), random_state=0) if len(frame) else frame
    x = scorer.matrix(sample)
    values = shap.TreeExplainer(scorer.booster)(x).values
    mean_abs = np.abs(values).mean(axis=0)
    ranked = [(scorer.features[i], float(mean_abs[i])) for i in np.argsort(-mean_abs)[:20]]
    plt.figure()
    shap.summary_plot(values, x, feature_names=scorer.features, show=False, max_display=20, plot_size=(8, 7),
                      rng=0)  # the jitter of the dots: fixed, so a report is the same each time
    return ranked, _svg(plt.gcf())


def write_report(out: Path, *, title: str, manifest: Mapping[str, Any], evaluation: Mapping[str, Any],
                 policy: Policy, scorer: Scorer, explain_frame: pd.DataFrame, test_frame: pd.DataFrame,
                 test_y: np.ndarray, test_scores: Mapping[str, np.ndarray]) -> None:
    """report.html and report.json for one trained model."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"importance_gain": importance(scorer)}
    parts = [f"<h1>{html.escape(title)}</h1>", _manifest_table(manifest)]
    candidates = evaluation.get("candidates", {})
    if candidates:
        parts.append("<h2>Out of time, beside the baselines</h2>")
        parts.append(_metrics_table(candidates))
        parts.append(_typology_table(candidates))
    plots = []
    if candidates and len(test_frame):
        y = test_y
        if int(np.asarray(y).sum()) > 0:  # with no fraud label in the test window recall means nothing (and sklearn
            figures["pr_curves"] = pr_curves(y, test_scores)  # warns on stderr for every candidate)
            fig, ax = plt.subplots(figsize=(6, 4.5))
            for name, curve in figures["pr_curves"].items():
                ax.plot(curve["recall"], curve["precision"], label=name)
            ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test window", ylim=(0, 1.02))
            ax.legend()
            plots.append(_figure(_svg(fig), "Precision against recall as the review threshold moves."))
        curve = candidates["model"]["reliability"]
        figures["reliability"] = curve
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.plot(curve["predicted"], curve["observed"], marker="o")
        top = max(max(curve["predicted"]), max(curve["observed"]), 0.05)
        ax.set(xlabel="mean predicted probability", ylabel="observed fraud/abuse rate", xlim=(0, top),
               ylim=(0, top), title=f"Calibration (Brier {candidates['model']['brier']:.4f})")
        plots.append(_figure(_svg(fig), "Reliability on score deciles: on the diagonal means calibrated."))
        score = test_scores["model"]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        bins = np.logspace(np.log10(max(score.min(), 1e-5)), 0, 40)
        for value, name in ((0, "legit or unlabelled"), (1, "fraud or abuse")):
            ax.hist(np.clip(score[y == value], 1e-5, 1), bins=bins, alpha=0.6, label=name, density=True)
        ax.set(xscale="log", xlabel="score", ylabel="density", title="Score distribution by label")
        ax.legend()
        plots.append(_figure(_svg(fig), "Scores of the test window by label (log scale)."))
    fig, ax = plt.subplots(figsize=(6, 5))
    names = [n for n, _ in figures["importance_gain"]][::-1]
    ax.barh(names, [v for _, v in figures["importance_gain"]][::-1])
    ax.set(xlabel="total gain", title="Feature importance (gain)")
    plots.append(_figure(_svg(fig), "Top features by the loss reduction of their splits."))
    if len(explain_frame):
        figures["mean_abs_shap"], svg = shap_summary(scorer, explain_frame)
        plots.append(_figure(svg, "SHAP summary (shap.TreeExplainer): each dot a return, colour the feature's value."))
    parts.append("<h2>Figures</h2><div class=grid>" + "".join(plots) + "</div>")
    parts.append(_policy_section(policy, evaluation.get("decisions")))
    page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><body>{''.join(parts)}</body></html>")
    (out / "report.html").write_text(page)
    (out / "report.json").write_text(json.dumps({"title": title, "manifest": manifest, "evaluation": evaluation,
                                                 "policy": policy.to_dict(), "figures": figures},
                                                indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value)} is not JSON serialisable")


def _manifest_table(manifest: Mapping[str, Any]) -> str:
    window = manifest.get("training_window", {})
    rows = [["feature service", manifest.get("feature_service")], ["features", len(manifest.get("features", []))],
            ["training returns requested", f"{window.get('from', '')} to {window.get('rows_until', '')}"],
            ["labels known at", manifest.get("label_cutoff")], ["label delay (days)", window.get("label_delay_days")],
            ["rows", json.dumps(manifest.get("rows", {}))], ["trees", _trees(manifest)],
            ["data", json.dumps(manifest.get("data", {}))]]
    return _table(["", ""], rows)


def _trees(manifest: Mapping[str, Any]) -> str:
    """The model's trees: rounds, and the members averaged and their trees when there are several."""
    members = int(manifest.get("ensemble", 1))
    rounds = manifest.get("best_iteration")
    return f"{manifest.get('trees')} ({rounds} rounds in each of {members} members averaged)" if members > 1 \
        else str(rounds)


def _metrics_table(candidates: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, m in candidates.items():
        rows.append([name, m["average_precision"], m["roc_auc"], m["at_rate"]["1%"]["recall"],
                     m["at_rate"]["2%"]["precision"], m["at_rate"]["2%"]["recall"], m["at_rate"]["5%"]["recall"],
                     m["per_day"]["10"]["precision"], m["customer_precision_per_day"]["10"],
                     m["at_rate"]["2%"]["money_recall"], m["brier"]])
    first = next(iter(candidates.values()))
    note = (f"<p class=note>{first['returns']:,} returns over {first['days']} days, {first['positives']:,} labelled "
            f"fraud/abuse (base rate {first['base_rate']:.2%}); money at stake {first['money_at_stake']:,.0f}.</p>")
    return note + _table(["candidate", "avg precision", "ROC AUC", "recall@1%", "precision@2%", "recall@2%",
                          "recall@5%", "precision 10/day", "customer precision 10/day", "money caught@2%",
                          "Brier"], rows)


def _typology_table(candidates: Mapping[str, Mapping[str, Any]]) -> str:
    if not all("by_typology" in m for m in candidates.values()):
        return "<p class=note>No ground truth given (--ground-truth): metrics by typology are not available.</p>"
    names = list(candidates)
    groups = list(next(iter(candidates.values()))["by_typology"])
    rows = [[g, candidates[names[0]]["by_typology"][g]["returns"],
             *[candidates[n]["by_typology"][g]["recall"] for n in names]] for g in groups]
    return ("<h2>Recall at a 2% review rate, by true typology</h2>"
            + _table(["typology", "returns", *[f"recall ({n})" for n in names]], rows))


def _policy_section(policy: Policy, decisions: Mapping[str, int] | None) -> str:
    rows = [["approve after inspection from", policy.inspect_from], ["store credit only from", policy.credit_from],
            ["review from", policy.review_from], ["deny from", policy.deny_from]]
    per_day = policy.basis.get("expected_per_day", {})
    text = (f"<h2>Decision policy {html.escape(policy.version)}</h2>" + _table(["threshold", "probability"], rows)
            + "<p class=note>Expected returns a day in each band: "
            + ", ".join(f"{html.escape(k)} {v:.1f}" for k, v in per_day.items()) + ".</p>")
    if decisions:
        text += _table(["decision on the test window", "returns"], [[k, v] for k, v in decisions.items()])
    return text


def write_prequential_report(out: Path, result: Mapping[str, Any]) -> None:
    """report.html and report.json for a prequential evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    paths = list(next(iter(summary.values())))
    rows = [[name, *[f"{s[p]['mean']:.4f} ± {s[p]['std']:.4f}" for p in paths]] for name, s in summary.items()]
    parts = ["<h1>Prequential evaluation</h1>",
             f"<p class=note>{len(result['folds'])} successive train/test windows; mean ± standard deviation.</p>",
             _table(["candidate", *paths], rows)]
    for i, fold in enumerate(result["folds"], 1):
        parts.append(f"<h2>Fold {i}: train {fold['train'][0][:10]} to {fold['train'][1][:10]}, "
                     f"test {fold['test'][0][:10]} to {fold['test'][1][:10]}</h2>")
        if fold.get("production_trained_on_test_window"):
            parts.append("<p class=note>The production model was trained on returns of this test window: "
                         "its figures here are not out of time.</p>")
        parts.append(_metrics_table(fold["candidates"]))
        parts.append(_typology_table(fold["candidates"]))
    page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>Prequential evaluation</title>"
            f"<style>{STYLE}</style><body>{''.join(parts)}</body></html>")
    (out / "report.html").write_text(page)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=_json_default))


def stamp_report(out: Path, model_version: str, policy_version: str) -> None:
    """Put the registered model and policy versions into a report written before registration."""
    for name in ("report.html", "report.json"):
        path = out / name
        text = path.read_text().replace(MODEL_TOKEN, model_version).replace(POLICY_TOKEN, policy_version)
        path.write_text(text)
