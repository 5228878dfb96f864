"""LightGBM training: native categoricals, time-ordered early stopping, fixed seeds, Platt calibration."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraud_service.errors import TrainingDataError
from fraud_service.scoring.model import Calibration, encode
from training.trainset import CATEGORICAL

MONOTONE_UP = (
    "cust_inr_30d", "cust_inr_90d", "cust_inr_365d", "cust_bad_inspections_365d", "cust_bad_inspections",
    "cust_fraud_labels", "cust_abuse_labels", "addr_bad_labels", "pay_bad_labels", "dev_bad_labels",
    "rfd_bad_labels", "addr_bad_inspections", "pay_bad_inspections", "dev_bad_inspections", "rfd_bad_inspections",
)
"""Evidence of past bad behaviour may only raise a score: a model that learns otherwise learned noise."""
CORE = (
    "rt_refund_to_order", "rt_days_since_order", "rt_days_since_delivery", "rt_hour_of_day", "rt_refund_amount",
    "rt_return_type", "rt_channel", "rt_refund_method", "rt_has_receipt", "cust_account_age_days",
    "cust_orders_30d", "cust_orders_365d", "cust_returns_30d", "cust_returns_90d", "cust_returns_365d",
    "cust_refund_30d", "cust_refund_90d", "cust_refund_365d", "cust_order_value_365d", "cust_inr_90d", "cust_inr_365d",
    "cust_claims_365d", "cust_returnless_365d", "cust_bad_inspections", "cust_passed_inspections",
    "cust_fraud_labels", "cust_abuse_labels", "cust_legit_labels",
    "addr_customers", "pay_customers", "dev_customers", "rfd_customers",
    "addr_bad_labels", "pay_bad_labels", "dev_bad_labels", "rfd_bad_labels",
)
"""The plain counts a first model starts from: the request, the customer's history, and who shares its tokens.
Ensemble members trained on these alone (`TrainConfig.core_members`) see the data as a simpler model does."""
MIN_POSITIVES = 20
# the validation slice grows back in time (to at most half the matured rows) until it holds this many: fewer make
# early stopping and the calibration guesswork, and with few labels the latest fifth can hold almost none
MIN_VALIDATION_POSITIVES = 10


@dataclass(frozen=True)
class TrainConfig:
    """LightGBM parameters and the validation split (the last share of the training rows, by time)."""

    num_leaves: int = 31
    max_depth: int = -1  # no limit; TreeSHAP's cost per row grows with the square of the depth
    learning_rate: float = 0.05
    max_rounds: int = 1500
    early_stopping_rounds: int = 200
    min_child_samples: int = 40
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    seed: int = 7
    validation_share: float = 0.2
    threads: int = 2
    unlabelled: str = "weighted"  # or "legit": how returns with no label enter training (training/workflow.py)
    refit: bool = True  # after early stopping, train again on every row (validation too) for the rounds it chose
    # models averaged into the final one, each with its own bagging and feature-sampling seed (docs/training.md: 3
    # members gain 0.67% AP, 5 gain 0.83% but cost twice as much to serve)
    ensemble: int = 3
    # weight factor of a row whose label an inspection contradicts (trainset.contradicted); 1: off. 0.5 helped the
    # generated worlds and hurt the held-out proxy on every seed (docs/training.md), so it is off
    contradicted: float = 1.0
    # an unlabelled return whose inspection known at the cutoff failed (trainset.inspected): "unlabelled" (as any
    # unlabelled return) or "bad" (a positive, weight 1)
    failed_inspections: str = "unlabelled"
    # of the ensemble's members, how many (the last ones) split only on CORE features: a simpler view of the data
    core_members: int = 0

    def params(self, features: list[str]) -> dict[str, Any]:
        return {
            "objective": "binary", "metric": "binary_logloss", "verbosity": -1,
            "num_leaves": self.num_leaves, "max_depth": self.max_depth, "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1, "lambda_l2": self.lambda_l2,
            "seed": self.seed, "deterministic": True, "force_row_wise": True, "num_threads": self.threads,
            "monotone_constraints": [1 if f in MONOTONE_UP else 0 for f in features],
            "monotone_constraints_method": "advanced",
            "cat_smooth": 10, "min_data_per_group": 50,
        }


@dataclass
class TrainedModel:
    """What `fit` learned: the booster's text, its encoding and calibration, and how training went."""

    model_text: str
    features: list[str]
    categories: dict[str, list[str]]
    calibration: Calibration
    best_iteration: int
    params: dict[str, Any]
    members: int = 1  # models averaged (trainer.average_models)
    trees: int = 0  # in all members
    rows: dict[str, int] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    typical: dict[str, Any] = field(default_factory=dict)

    def manifest_part(self) -> dict[str, Any]:
        return {"features": self.features, "categories": self.categories,
                "categorical_features": [f for f in self.features if f in self.categories],
                "calibration": self.calibration.to_dict(), "best_iteration": self.best_iteration,
                "ensemble": self.members, "trees": self.trees,
                "params": self.params, "rows": self.rows, "validation": self.validation, "typical": self.typical}


def fit(frame: pd.DataFrame, y: np.ndarray, features: list[str], config: TrainConfig | None = None,
        weight: np.ndarray | None = None, mature: np.ndarray | None = None) -> TrainedModel:
    """Train on FRAME (time-ordered rows) with targets Y (and WEIGHT per row). The latest `validation_share` of
    the rows validate, early-stop and calibrate (reaching further back, up to half, until they hold
    MIN_VALIDATION_POSITIVES positives, or starting later to leave the training part enough; `_validation_start`);
    with MATURE (a mask: rows whose labels have had time to arrive), the latest of those, and every other row
    trains."""
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    config = config or TrainConfig()
    if config.ensemble < 1 or not 0 <= config.core_members < config.ensemble:
        raise ValueError(f"ensemble={config.ensemble}, core_members={config.core_members}: a model at least, one plain")
    if len(frame) != len(y):
        raise ValueError(f"{len(frame)} rows but {len(y)} targets")
    order = np.argsort(frame["requested_at"].to_numpy(), kind="stable")
    frame, y = frame.iloc[order].reset_index(drop=True), np.asarray(y)[order]
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)[order]
    ripe = np.ones(len(y), dtype=bool) if mature is None else np.asarray(mature, dtype=bool)[order]
    ripe_rows = np.flatnonzero(ripe)
    is_valid = np.zeros(len(y), dtype=bool)
    is_valid[ripe_rows[_validation_start(y[ripe_rows], config.validation_share, already=int(y[~ripe].sum())):]] = True
    reorder = np.r_[np.flatnonzero(~is_valid), np.flatnonzero(is_valid)]  # training rows first, then validation
    frame, y, w = frame.iloc[reorder].reset_index(drop=True), y[reorder], w[reorder]
    split = int((~is_valid).sum())
    y_train, y_valid = y[:split], y[split:]
    if int(y.sum()) < MIN_POSITIVES:
        raise TrainingDataError(f"{int(y.sum())} fraud/abuse labels among {len(y):,} returns; at least "
                                f"{MIN_POSITIVES} labelled fraud/abuse returns are needed to train")
    for part, values, least in (("training", y_train, MIN_POSITIVES // 2), ("validation", y_valid, MIN_POSITIVES // 4)):
        if int(values.sum()) < least:
            raise TrainingDataError(
                f"the {part} slice has {int(values.sum())} fraud/abuse labels among {len(values):,} returns; at least "
                f"{least} are needed there (the validation slice is the latest matured returns, reaching back to at "
                f"most half of them for {MIN_VALIDATION_POSITIVES} labels, or starting later to leave the training "
                f"part {MIN_POSITIVES // 2})")
    if int(y_valid.sum()) == len(y_valid):
        raise TrainingDataError(f"the validation slice ({len(y_valid):,} returns) holds only fraud/abuse labels: "
                                "the calibration needs legit or unlabelled returns there too")
    categories = {name: sorted(str(v) for v in frame[name].dropna().unique()) for name in features
                  if name in CATEGORICAL}
    x = encode(frame, features, categories)
    params = config.params(features)
    categorical = [i for i, name in enumerate(features) if name in categories]
    train = lgb.Dataset(x[:split], y_train, weight=w[:split], feature_name=features, categorical_feature=categorical,
                        free_raw_data=True)
    valid = lgb.Dataset(x[split:], y_valid, weight=w[split:], reference=train)
    booster = lgb.train(params, train, num_boost_round=config.max_rounds, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
    best = int(booster.best_iteration or booster.current_iteration())
    # the members differ only in which rows and features each tree samples: their average has less of the
    # variance a single model's sampling brings (without sampling they would be copies: one model then)
    count = config.ensemble if min(config.bagging_fraction, config.feature_fraction) < 1.0 else 1
    members = [booster] + [lgb.train(_member(params, config, k, features, count), train, num_boost_round=best)
                           for k in range(1, count)]
    raw_valid = np.mean([m.predict(x[split:], raw_score=True, num_iteration=best) for m in members], axis=0)
    # the default L2 penalty shrinks the slope when the validation slice is small (overconfidence is costlier)
    platt = LogisticRegression(max_iter=1000).fit(raw_valid.reshape(-1, 1), y_valid, sample_weight=w[split:])
    calibration = Calibration(a=float(platt.coef_[0, 0]), b=float(platt.intercept_[0]))
    if config.refit:
        # the validation slice is the latest matured traffic, the closest to what the model will score: once it
        # has chosen the number of rounds and the calibration, it trains too (the calibration stays the one fitted
        # out of sample, on the early-stopping members' validation scores)
        whole = lgb.Dataset(x, y, weight=w, feature_name=features, categorical_feature=categorical,
                            free_raw_data=True)
        members = [lgb.train(_member(params, config, k, features, count), whole, num_boost_round=best)
                   for k in range(count)]
    text = average_models([m.model_to_string(num_iteration=best) for m in members])
    return TrainedModel(
        model_text=text, features=features, categories=categories, calibration=calibration, best_iteration=best,
        members=count, trees=len(_TREE.findall(text)),
        params={k: v for k, v in params.items() if k != "monotone_constraints"} | {"config": asdict(config)},
        rows={"train": split, "validation": len(frame) - split, "train_positives": int(y_train.sum()),
              "validation_positives": int(y_valid.sum()), "final_model": len(frame) if config.refit else split},
        # with the refit, the validation rows train the final model too: this figure is the early-stopping model's
        validation={"average_precision": float(average_precision_score(y_valid, raw_valid, sample_weight=w[split:])),
                    "of": "the early-stopping models, before the refit" if config.refit else "the final model"},
        typical=typical_values(frame, features, categories),
    )


def _validation_start(y: np.ndarray, share: float, already: int = 0) -> int:
    """Where the validation slice starts among time-ordered targets Y (the matured rows): the latest SHARE of them, or,
    when that holds fewer than MIN_VALIDATION_POSITIVES positives, as far back as it takes to hold them, but never
    more than half. When that leaves the training part (the rows before it and ALREADY positives among rows that train
    in any case) fewer than MIN_POSITIVES // 2 (labels that only began lately), it starts later, as long as it keeps
    MIN_POSITIVES // 4 positives and a negative."""
    start = int(len(y) * (1 - share))
    positive, negative = np.flatnonzero(y > 0), np.flatnonzero(y <= 0)
    if len(positive) - np.searchsorted(positive, start) < MIN_VALIDATION_POSITIVES:
        needed = positive[-MIN_VALIDATION_POSITIVES] if len(positive) >= MIN_VALIDATION_POSITIVES else 0
        start = min(start, max(int(needed), len(y) - len(y) // 2))
    train_least, valid_least = max(MIN_POSITIVES // 2 - already, 0), MIN_POSITIVES // 4
    if np.searchsorted(positive, start) < train_least <= len(positive) - valid_least:
        later = min(int(positive[train_least - 1]) + 1, int(positive[-valid_least]))
        if len(negative) and negative[-1] >= later:  # a slice of positives alone cannot calibrate
            start = later
    return start


def _member(params: dict[str, Any], config: TrainConfig, k: int, features: list[str], count: int) -> dict[str, Any]:
    """The parameters of ensemble member K of COUNT: member 0 is the early-stopping model's own sampling; the last
    `core_members` split only on CORE features (a zero gain for the others)."""
    if k == 0:
        return params
    seeded = params | {"bagging_seed": config.seed * 1000 + k, "feature_fraction_seed": config.seed * 1000 + k}
    if k >= count - config.core_members:
        seeded["feature_contri"] = [1.0 if f in CORE else 0.0 for f in features]
    return seeded


_TREE = re.compile(r"^Tree=\d+\n", re.MULTILINE)
_SCALED = re.compile(r"^(leaf_value|internal_value)=(.*)$", re.MULTILINE)


def average_models(texts: list[str]) -> str:
    """One LightGBM model (text) whose raw score is the mean of the raw scores of TEXTS, models trained on the same
    data (same header: features, their ranges and categories, objective): every tree of every model, its leaf and
    node values divided by their number. A single model is returned as it is. TreeSHAP is linear in the leaf
    values, so the average's contributions are the mean of the members' (tests check it against LightGBM and the
    `shap` package)."""
    if len(texts) == 1:
        return texts[0]
    if any(re.search(r"^is_linear=1$", text, re.MULTILINE) for text in texts):
        raise ValueError("linear trees cannot be averaged this way (their leaves hold coefficients)")
    scale = 1.0 / len(texts)

    def scaled(match: re.Match[str]) -> str:
        return f"{match.group(1)}=" + " ".join(repr(float(v) * scale) for v in match.group(2).split())

    header = texts[0].partition("\nTree=0\n")[0]
    trees: list[str] = []
    for text in texts:
        head, first, rest = text.partition("\nTree=0\n")
        body, end, _ = rest.partition("end of trees")
        if not first or not end:
            raise ValueError("not a LightGBM model text: no trees")
        if head.replace(_sizes(head), "") != header.replace(_sizes(header), ""):
            raise ValueError("models to average must share their header (features, categories, objective)")
        trees += [_SCALED.sub(scaled, block) for block in _TREE.split("Tree=0\n" + body)[1:]]
    blocks = [f"Tree={i}\n{block}" for i, block in enumerate(trees)]
    sizes = "tree_sizes=" + " ".join(str(len(block.encode())) for block in blocks)
    return (header.replace(_sizes(header), sizes) + "\n" + "".join(blocks) + "end of trees\n\n"
            + _importances(header, trees) + texts[0][texts[0].index("\nparameters:"):])


def _sizes(text: str) -> str:
    """The `tree_sizes=...` line of a model text's header."""
    match = re.search(r"^tree_sizes=.*$", text, re.MULTILINE)
    if match is None:
        raise ValueError("not a LightGBM model text: no tree_sizes line")
    return match.group(0)


def _importances(header: str, trees: list[str]) -> str:
    """The `feature_importances:` section of a model of TREES: splits per feature, most first (as LightGBM writes
    it)."""
    names = re.search(r"^feature_names=(.*)$", header, re.MULTILINE)
    if names is None:
        raise ValueError("not a LightGBM model text: no feature_names line")
    features = names.group(1).split()
    splits = [0] * len(features)
    for tree in trees:
        found = re.search(r"^split_feature=(.*)$", tree, re.MULTILINE)
        for index in (found.group(1).split() if found else []):
            splits[int(index)] += 1
    ranked = sorted((-count, i) for i, count in enumerate(splits) if count)
    return "feature_importances:\n" + "".join(f"{features[i]}={-count}\n" for count, i in ranked)


def typical_values(frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]) -> dict[str, Any]:
    """Each feature's median (categoricals: most common value) over the training rows, for reason sentences."""
    out: dict[str, Any] = {}
    for name in features:
        values = frame[name].dropna()
        if values.empty:
            out[name] = None
        elif name in categories:
            out[name] = str(values.mode().iloc[0])
        else:
            out[name] = float(pd.to_numeric(values).median())
    return out
