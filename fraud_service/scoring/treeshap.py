"""Exact TreeSHAP for one row, several times faster than LightGBM's, from a model flattened once.

LightGBM's `pred_contrib` runs the path-dependent TreeSHAP of Lundberg et al. (arXiv:1706.06060) for any mix
of hot and cold paths: at every node it extends the path's permutation weights by fractions it computes
there, and at every leaf it unwinds them once per feature on the path. For one row most of that work depends
only on the model, and the rest on a yes or no per split. For a leaf with value v whose path holds the
distinct features u_1..u_d, let z_k be the share of the training rows that, at the path's splits on u_k, went
the leaf's way (the product of the cover fractions; fixed by the model), and o_k = 1 when the row goes the
leaf's way at all of them, else 0. The leaf gives feature u_k

    v (o_k - z_k) * sum over S subset of A \\ {k} of w_d(|S|) prod_{j in U \\ S, j != k} z_j,
    w_d(s) = s! (d - s - 1)! / d!

where A is the set of slots the row agrees with (o = 1) and U all d slots. With P(t), the product over the
agreeing slots of (z_j + t), and Z the product of the other slots' z, the sum is Z sum_s w_d(s) [t^s] P(t)
for a slot the row disagrees with (times -v, as o - z = -z cancels the 1/z_k the sum leaves), and, for an
agreeing slot k, the same with (z_k + t) divided out of P (times v (1 - z_k)). So a row costs one pass over
each tree's nodes (the split's decision, AND-ed into the slot bits of the paths below it) and, per leaf, a
polynomial in the agreeing slots only: no path copies, no fraction arithmetic per node. The model's part (the
paths' features and z per leaf, the expected value) is computed once when the model loads.
`bench/treeshap_bench.py` measures it against `pred_contrib`.

The splits are decided as LightGBM's `Tree::Decision` decides them (a value within LightGBM's zero threshold
is 0, a missing value goes by the split's missing type and default direction, a categorical split by its list
of categories, negative and NaN values right), and tests check every leaf against LightGBM's `pred_leaf` and
every contribution against `pred_contrib` and the `shap` package. On the service's models the two agree to
about 1e-14; on paths with dozens of distinct features both lose digits (LightGBM more: its sums then miss the
raw score by more). A model this module does not flatten (several outputs per iteration, linear trees, a leaf
deeper than `MAX_DEPTH` or with more than `MAX_SLOTS` distinct features on its path, a split with no training
rows on one side) gets None from `TreeTables.build`; `Scorer` then keeps LightGBM's TreeSHAP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_SLOTS = 62
"""The most distinct features one leaf's path may hold (the row's agreement with them is one 64-bit word)."""
MAX_DEPTH = 500
"""The deepest leaf a flattened tree may hold (deeper, degenerate trees keep LightGBM's TreeSHAP): the flattening
walks a tree recursively, within Python's default recursion limit."""

_LEAF, _NUMERIC, _CATEGORICAL = 0, 1, 2
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}

NODE = np.dtype([
    ("threshold", np.float64),  # a numeric split's threshold; a leaf's value
    ("right", np.int32),        # a split's right child (its left child is the next node)
    ("feature", np.int32),      # a split's feature
    ("cat_from", np.int32),     # a categorical split's categories going left: categories[cat_from:cat_to];
    ("cat_to", np.int32),       # a leaf's slots: path_feature[cat_from:cat_to] and path_z[cat_from:cat_to]
    ("kind", np.int8),          # 0 leaf, 1 numeric split, 2 categorical split
    ("missing", np.int8),       # a split's missing type: 0 none, 1 zero, 2 NaN
    ("default_left", np.int8),  # 1 when a split's missing values go left
    ("slot", np.int8),          # the path slot of a split's feature
    ("new_slot", np.int8),      # 1 at the feature's first split on the path
], align=True)
"""A node of the flattened model: one 32-byte record, so that following a row down a tree reads one cache line per
split (the 1,400 trees of a model span megabytes; a row's path through them is mostly cache misses)."""


@dataclass(frozen=True)
class TreeTables:
    """Every tree of a model as records in depth-first order (a node, its left subtree, its right subtree)."""

    nodes: np.ndarray         # NODE [nodes]
    roots: np.ndarray         # int64 [trees]: each tree's first node
    categories: np.ndarray    # int64: the categories going left at the categorical splits
    leaf_index: np.ndarray    # int64 [nodes]: a leaf's index in its tree (LightGBM's numbering)
    path_feature: np.ndarray  # int64: the leaves' slots' features
    path_z: np.ndarray        # float64: the slots' shares of training rows going the leaf's way
    weights: np.ndarray       # float64 [slots + 1, slots + 1]: w_d(s) for d slots
    expected: float           # the model's expected raw score (the cover-weighted mean of its leaves)
    features: int
    depth: int                # the deepest leaf's depth

    @classmethod
    def build(cls, model: dict[str, Any]) -> TreeTables | None:
        """The flattened model of `Booster.dump_model()`, or None when this module does not explain it."""
        if model.get("num_tree_per_iteration", 1) != 1 or model.get("num_class", 1) != 1:
            return None
        builder = _Builder()
        for tree in model["tree_info"]:
            root = tree["tree_structure"]
            builder.roots.append(len(builder.nodes))
            if not builder.visit(root, [], _count(root)):
                return None
        return builder.finish(int(model["max_feature_idx"]) + 1)

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """TreeSHAP of one row (n feature values): n + 1 values, the last the expected raw score."""
        from fraud_service.scoring import treeshap_kernels

        out = np.zeros(self.features + 1)
        treeshap_kernels.explain(self._row(row), self.nodes, self.roots, self.categories, self.path_feature,
                                 self.path_z, self.weights, self.depth, out)
        out[self.features] += self.expected
        return out

    def raw(self, row: np.ndarray) -> float:
        """The raw score of one row (n feature values), equal to the bit to LightGBM's: the same leaves' values added
        in the same order."""
        from fraud_service.scoring import treeshap_kernels

        return float(treeshap_kernels.raw(self._row(row), self.nodes, self.roots, self.categories))

    def leaves(self, row: np.ndarray) -> np.ndarray:
        """The leaf each tree sends ROW to, numbered as LightGBM's `pred_leaf` numbers them."""
        from fraud_service.scoring import treeshap_kernels

        out = np.zeros(len(self.roots), dtype=np.int64)
        treeshap_kernels.leaves(self._row(row), self.nodes, self.roots, self.categories, self.leaf_index, out)
        return out

    def _row(self, row: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(row, dtype=np.float64).reshape(-1)
        if x.shape != (self.features,):
            raise ValueError(f"expected one row of {self.features} values, got an array of shape {np.shape(row)}")
        return x


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[list[Any]] = []  # NODE's fields, then the leaf index
        self.roots: list[int] = []
        self.categories: list[int] = []
        self.path_feature: list[int] = []
        self.path_z: list[float] = []
        self.expected = 0.0
        self.depth = 0

    def visit(self, node: dict[str, Any], path: list[tuple[int, float]], total: float, depth: int = 0) -> bool:
        """Append NODE and its subtree; PATH holds the slots above it as (feature, z). False: not explainable."""
        if depth > MAX_DEPTH:
            return False
        if "split_index" not in node:
            if len(path) > MAX_SLOTS or node.get("leaf_coeff"):  # a linear tree's leaf is not a constant
                return False
            value = float(node["leaf_value"])
            self.depth = max(self.depth, depth)
            self.expected += value * (_count(node) / total if path else 1.0)
            at = len(self.path_feature)
            self.nodes.append([value, -1, 0, at, at + len(path), _LEAF, 0, 0, 0, 0, int(node.get("leaf_index", 0))])
            self.path_feature.extend(f for f, _ in path)
            self.path_z.extend(z for _, z in path)
            return True
        count = _count(node)
        shares = [_count(child) / count if count > 0 else 0.0 for child in (node["left_child"], node["right_child"])]
        if min(shares) <= 0.0:
            return False
        feature = int(node["split_feature"])
        categorical = node["decision_type"] == "=="
        start = len(self.categories)
        if categorical:
            self.categories.extend(int(c) for c in str(node["threshold"]).split("||"))
        here = [f for f, _ in path]
        new = feature not in here
        slot = len(path) if new else here.index(feature)
        me = [0.0 if categorical else float(node["threshold"]), -1, feature, start, len(self.categories),
              _CATEGORICAL if categorical else _NUMERIC, _MISSING[node["missing_type"]],
              int(bool(node["default_left"])), slot, int(new), 0]
        self.nodes.append(me)
        for side, (child, share) in enumerate(zip((node["left_child"], node["right_child"]), shares, strict=True)):
            if side == 1:
                me[1] = len(self.nodes)  # the right subtree starts after the left one
            below = list(path)
            if new:
                below.append((feature, share))
            else:
                below[slot] = (feature, path[slot][1] * share)
            if not self.visit(child, below, total, depth + 1):
                return False
        return True

    def finish(self, features: int) -> TreeTables | None:
        if len(self.nodes) >= 2**31:
            return None
        nodes = np.zeros(len(self.nodes), dtype=NODE)
        for i, name in enumerate(NODE.names or ()):
            nodes[name] = [node[i] for node in self.nodes]
        slots = min(self.depth, MAX_SLOTS)  # a leaf has at most as many slots as splits above it
        weights = np.zeros((slots + 1, slots + 1))
        for d in range(1, slots + 1):
            for s in range(d):
                weights[d, s] = math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
        return TreeTables(
            nodes=nodes, roots=np.asarray(self.roots, dtype=np.int64),
            categories=np.asarray(self.categories or [0], dtype=np.int64),
            leaf_index=np.asarray([node[-1] for node in self.nodes], dtype=np.int64),
            path_feature=np.asarray(self.path_feature or [0], dtype=np.int64),
            path_z=np.asarray(self.path_z or [1.0], dtype=np.float64), weights=weights, expected=self.expected,
            features=features, depth=self.depth)


def _count(node: dict[str, Any]) -> float:
    return float(node["internal_count"] if "split_index" in node else node.get("leaf_count", 0))
