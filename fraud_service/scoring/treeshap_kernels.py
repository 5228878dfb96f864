"""The compiled loops of `treeshap` (numba; imported only when a model is explained, compiled once and cached)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ZERO = 1e-35  # LightGBM's kZeroThreshold


@njit(cache=True, nogil=True)
def goes_left(x: float, kind: int, threshold: float, missing: int, default_left: int, categories: np.ndarray,
              cat_from: int, cat_to: int) -> bool:
    """LightGBM's `Tree::Decision` for one split (kind 1 numeric, 2 categorical)."""
    if kind == 2:
        if math.isnan(x) or x <= -1.0:  # C's cast toward zero: (-1, 0) is category 0
            return False
        code = int(x)
        for i in range(cat_from, cat_to):
            if categories[i] == code:
                return True
        return False
    if math.isnan(x) and missing != 2:
        x = 0.0
    if (missing == 1 and -ZERO <= x <= ZERO) or (missing == 2 and math.isnan(x)):
        return default_left == 1
    return x <= threshold


@njit(cache=True, nogil=True)
def explain(x: np.ndarray, roots: np.ndarray, kind: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
            missing: np.ndarray, default_left: np.ndarray, right: np.ndarray, slot: np.ndarray, new_slot: np.ndarray,
            cat_from: np.ndarray, cat_to: np.ndarray, categories: np.ndarray, value: np.ndarray,
            path_at: np.ndarray, slots: np.ndarray, path_feature: np.ndarray, path_z: np.ndarray,
            weights: np.ndarray, depth: int, out: np.ndarray) -> None:
    """Add every leaf's contributions for row X to OUT (see `treeshap`): each tree's nodes once, depth first,
    carrying the bits of the path's slots the row agrees with; at a leaf, the polynomial of the agreeing slots."""
    stack_node = np.empty(depth + 1, dtype=np.int64)
    stack_bits = np.empty(depth + 1, dtype=np.int64)
    poly = np.empty(depth + 2)
    part = np.empty(depth + 2)
    for t in range(roots.shape[0]):
        stack_node[0] = roots[t]
        stack_bits[0] = 0
        top = 1
        while top > 0:
            top -= 1
            n = stack_node[top]
            bits = stack_bits[top]
            while kind[n] != 0:
                left = goes_left(x[feature[n]], kind[n], threshold[n], missing[n], default_left[n], categories,
                                 cat_from[n], cat_to[n])
                bit = np.int64(1) << slot[n]
                if new_slot[n] == 1:
                    left_bits = bits | bit if left else bits
                    right_bits = bits if left else bits | bit
                else:
                    left_bits = bits if left else bits & ~bit
                    right_bits = bits & ~bit if left else bits
                stack_node[top] = right[n]
                stack_bits[top] = right_bits
                top += 1
                n += 1
                bits = left_bits
            d = slots[n]
            if d == 0:
                continue
            at = path_at[n]
            # prod over agreeing slots of (z + t), and the product of the others' z
            poly[0] = 1.0
            degree = 0
            others = 1.0
            for k in range(d):
                z = path_z[at + k]
                if bits >> k & 1:
                    poly[degree + 1] = poly[degree]
                    for i in range(degree, 0, -1):
                        poly[i] = poly[i] * z + poly[i - 1]
                    poly[0] *= z
                    degree += 1
                else:
                    others *= z
            v = value[n] * others
            w = weights[d]
            if degree < d:  # a slot the row disagrees with gets -v * sum_s w(s) poly[s]
                total = 0.0
                for i in range(degree + 1):
                    total += w[i] * poly[i]
                for k in range(d):
                    if not bits >> k & 1:
                        out[path_feature[at + k]] -= v * total
            for k in range(d):  # an agreeing slot: its factor divided out, times v (1 - z)
                if bits >> k & 1:
                    z = path_z[at + k]
                    part[degree - 1] = poly[degree]
                    for i in range(degree - 1, 0, -1):
                        part[i - 1] = poly[i] - z * part[i]
                    total = 0.0
                    for i in range(degree):
                        total += w[i] * part[i]
                    out[path_feature[at + k]] += v * (1.0 - z) * total


@njit(cache=True, nogil=True)
def leaves(x: np.ndarray, roots: np.ndarray, kind: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
           missing: np.ndarray, default_left: np.ndarray, right: np.ndarray, cat_from: np.ndarray,
           cat_to: np.ndarray, categories: np.ndarray, leaf_index: np.ndarray, out: np.ndarray) -> None:
    """The leaf (LightGBM's numbering) each tree sends row X to."""
    for t in range(roots.shape[0]):
        n = roots[t]
        while kind[n] != 0:
            if goes_left(x[feature[n]], kind[n], threshold[n], missing[n], default_left[n], categories,
                         cat_from[n], cat_to[n]):
                n += 1
            else:
                n = right[n]
        out[t] = leaf_index[n]
