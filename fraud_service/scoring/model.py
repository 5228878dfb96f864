"""The scorer: a registered LightGBM model, its feature encoding and its calibration.

Batch scoring, evaluation and the scoring API all score through this class, so a return gets
the same score whichever path computes it.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.definitions import FEATURE_SERVICE, feature_names
from fraud_service.scoring.treeshap import TreeTables
from models.registry import ModelRecord, ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """Platt scaling: probability = 1 / (1 + exp(-(a * raw + b)))."""

    a: float = 1.0
    b: float = 0.0

    def apply(self, raw: np.ndarray | float) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(self.a * raw + self.b))))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "a": self.a, "b": self.b}


class Scorer:
    """Scores feature vectors with one model version."""

    def __init__(self, version: str, manifest: Mapping[str, Any], model_text: str,
                 policy: Mapping[str, Any] | None = None) -> None:
        import lightgbm as lgb

        self.version = version
        self.manifest = dict(manifest)
        self.policy: dict[str, Any] = dict(policy or {})
        self.features: list[str] = list(manifest["features"])
        self.categories: dict[str, list[str]] = {k: list(v) for k, v in manifest.get("categories", {}).items()}
        self._codes = category_codes(self.categories)
        calibration = manifest.get("calibration", {})
        self.calibration = Calibration(float(calibration.get("a", 1.0)), float(calibration.get("b", 0.0)))
        self.booster = lgb.Booster(model_str=model_text)
        if self.booster.num_feature() != len(self.features):
            raise ValueError(f"model {self.version} has {self.booster.num_feature()} inputs but its manifest "
                             f"lists {len(self.features)} features")
        trained = self.booster.feature_name()
        if trained != self.features and trained != [f"Column_{i}" for i in range(len(trained))]:  # unnamed: unknown
            at = next(i for i, (a, b) in enumerate(zip(trained, self.features, strict=True)) if a != b)
            raise ValueError(f"model {self.version} was trained with {trained[at]!r} as input {at + 1}, but its "
                             f"manifest lists {self.features[at]!r} there: its features would be fed to the wrong "
                             "inputs")
        self._model_text = model_text
        self._single_raw = SingleRow(self.booster, RAW_SCORE, hold_gil=True)
        self._explainer: Callable[[np.ndarray], np.ndarray] | None = None  # made by the first explanation
        self._tables: TreeTables | None = None  # the flattened model, once the first explanation made it
        self._contrib_lock = threading.Lock()

    @classmethod
    def from_record(cls, record: ModelRecord) -> Scorer:
        return cls(record.version, record.manifest, record.model_text(), record.policy)

    @classmethod
    def from_registry(cls, registry: ModelRegistry, ref: str = "production") -> Scorer:
        """Load REF (a version or alias), refusing a model whose features the feature service lacks."""
        return cls.from_record(registry.load(ref, expected_features=feature_names()))

    @property
    def feature_service(self) -> str:
        return str(self.manifest.get("feature_service", FEATURE_SERVICE))

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's input matrix from a frame holding (at least) its features."""
        return encode(frame, self.features, self.categories)

    def row(self, vector: Mapping[str, Any]) -> np.ndarray:
        """A 1 x n input matrix from one feature vector (the online path: no DataFrame)."""
        out = np.empty((1, len(self.features)))
        for i, name in enumerate(self.features):
            value = vector.get(name)
            if name in self._codes:
                out[0, i] = self._codes[name].get(value, math.nan) if isinstance(value, str) else math.nan
            else:
                out[0, i] = math.nan if value is None else float(value)
        return out

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw (log-odds) scores. One row is scored on the flattened model once there is one (the first explanation
        makes it; the service's warm-up explains once), else through LightGBM's single-row entry point: the same
        bits either way, the flattened model in about two thirds of the time, without the interpreter lock."""
        if len(x) == 1:
            tables = self._tables
            if tables is not None:
                return np.array([tables.raw(x[0])])
            return self._single_raw.predict(x)[:, 0]
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=BATCH_THREADS))

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities that each return is fraud or abuse."""
        return self.calibration.apply(self.raw(x))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions in raw-score space: n x (features + 1), the last column the expected value."""
        if len(x) == 1:
            return self._single_explainer()(x)
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=BATCH_THREADS))

    def _single_explainer(self) -> Callable[[np.ndarray], np.ndarray]:
        """How one row is explained: the model flattened for `treeshap` (the same values as LightGBM's TreeSHAP,
        several times sooner; built on the first explanation, about a second for 1,400 trees, which the service
        does while warming up), or, for a model it does not flatten, LightGBM's own single-row TreeSHAP on a
        second copy of the model (so that a score, which holds the interpreter lock, see `SingleRow`, never
        shares a booster with an explanation running in another thread)."""
        if self._explainer is None:
            with self._contrib_lock:
                if self._explainer is None:
                    self._explainer = self._flattened()
                if self._explainer is None:
                    import lightgbm as lgb

                    self._explainer = SingleRow(lgb.Booster(model_str=self._model_text), CONTRIB,
                                                hold_gil=False).predict
        return self._explainer

    def _flattened(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The flattened model's explanation of one row, tried once; None when the model is not flattened or its
        kernels cannot run here (LightGBM's TreeSHAP then explains, or refuses a model it cannot explain)."""
        try:
            tables = TreeTables.build(self.booster.dump_model())
            if tables is None:
                return None
            zeros = np.zeros(tables.features)
            tables.contributions(zeros)  # compiled (or loaded) now, not in a request
            tables.raw(zeros)
        except Exception:  # a model too deep to dump, kernels that do not compile: LightGBM's TreeSHAP instead
            log.warning("model %s: explanations fall back to LightGBM's TreeSHAP", self.version, exc_info=True)
            return None
        self._tables = tables
        return lambda x: tables.contributions(x[0])[np.newaxis, :]

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return self.probability(self.matrix(frame))

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "features": len(self.features),
                "trees": self.booster.num_trees(), "policy": self.policy.get("version")}



RAW_SCORE, CONTRIB = 1, 3  # LightGBM's C_API_PREDICT_RAW_SCORE and C_API_PREDICT_CONTRIB
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class SingleRow:
    """LightGBM's single-row fast prediction (`LGBM_BoosterPredictForMatSingleRowFast`) for one booster and kind.

    `Booster.predict` parses its parameters and builds a predictor on every call (0.05-0.07 ms for one row
    of a 412-tree model in a loop, 0.03-0.04 ms here), and releases the interpreter lock, so under load the
    request thread then waits for other threads to hand it back. The fast entry point keeps a prepared
    configuration (one per thread: LightGBM's own buffers are per configuration). With HOLD_GIL
    the call keeps the interpreter lock (ctypes.PyDLL): right for a score of a small model (tens of
    microseconds), wrong for an explanation (milliseconds, during which the other threads should run).
    `Scorer` scores single rows here only until the model is flattened (`TreeTables.raw` then), or
    when it is not.
    """

    def __init__(self, booster: Any, kind: int, *, hold_gil: bool) -> None:
        from lightgbm.basic import _LIB

        self.booster = booster  # kept alive as long as the configurations that point to it
        self.kind = kind
        self.columns = booster.num_feature()
        self.width = self.columns + 1 if kind == CONTRIB else 1
        lib = ctypes.PyDLL(_LIB._name) if hold_gil else ctypes.CDLL(_LIB._name)
        self._predict = lib.LGBM_BoosterPredictForMatSingleRowFast
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p]
        self._predict.restype = ctypes.c_int
        self._init = _LIB.LGBM_BoosterPredictForMatSingleRowFastInit
        self._free = _LIB.LGBM_FastConfigFree
        self._error = _LIB.LGBM_GetLastError
        self._error.restype = ctypes.c_char_p
        self._local = threading.local()
        self._handles: list[ctypes.c_void_p] = []
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """A 1 x width array of predictions for the one row of X."""
        if x.shape != (1, self.columns):
            raise ValueError(f"expected one row of {self.columns} values, got an array of shape {x.shape}")
        row = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty((1, self.width))
        length = ctypes.c_int64()
        if self._predict(self._handle(), row.ctypes.data, ctypes.byref(length), out.ctypes.data) != 0:
            raise RuntimeError(f"LightGBM single-row prediction failed: {self._error().decode()}")
        return out

    def _handle(self) -> ctypes.c_void_p:
        handle: ctypes.c_void_p | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = ctypes.c_void_p()
            status = self._init(self.booster._handle, ctypes.c_int(self.kind), ctypes.c_int(0), ctypes.c_int(-1),
                                ctypes.c_int(_FLOAT64), ctypes.c_int32(self.columns), ctypes.c_char_p(b"num_threads=1"),
                                ctypes.byref(handle))
            if status != 0:
                raise RuntimeError(f"LightGBM single-row prediction failed: {self._error().decode()}")
            with self._lock:
                self._handles.append(handle)
            self._local.handle = handle
        return handle

    def __del__(self) -> None:
        for handle in getattr(self, "_handles", []):
            self._free(handle)


BATCH_THREADS = os.cpu_count() or 1
"""LightGBM's threads for a batch (single rows go through `SingleRow`, with one thread: idle OpenMP threads
spin between single-row calls, which once took an API assessment from about 5 ms of CPU to 9.0 ms). Stated
on every batch call, as LightGBM keeps the last count it was given."""


def category_codes(categories: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Value -> LightGBM category code (its position in the list)."""
    return {name: {value: float(i) for i, value in enumerate(values)} for name, values in categories.items()}


def encode(frame: pd.DataFrame, features: Sequence[str], categories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """A float matrix in FEATURES order; categorical values become codes, unknown ones NaN (missing)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"feature frame lacks {', '.join(missing)}")
    codes = category_codes(categories)
    out = np.empty((len(frame), len(features)))
    for i, name in enumerate(features):
        if name in codes:
            out[:, i] = frame[name].map(codes[name]).to_numpy(dtype=float, na_value=math.nan)
        else:
            out[:, i] = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=math.nan)
    return out
