"""The compiled loops of `treeshap` (numba; imported only when a model is first used one row at a time, compiled
once and cached beside this module).

A node is one 32-byte record (`treeshap.NODE`), so that following a row down a tree reads one cache line per split: the
1,400 trees of a model span megabytes, and a row's path through them is mostly cache misses.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float constant): |x| at most this is zero


def njit(function: Any) -> Any:
    """Compiled without the interpreter lock, and cached on disk where numba finds a writable place (beside this
    module, or the user's cache directory); compiled in each process where it finds none."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@njit
def goes_left(x: np.ndarray, node: np.void, categories: np.ndarray) -> bool:
    """LightGBM's `Tree::Decision` for the split NODE and row X (whose values within ZERO of 0 LightGBM reads as 0
    when it takes the row in)."""
    value = float(x[node["feature"]])
    if abs(value) <= ZERO:
        value = 0.0
    if node["kind"] == 2:
        if math.isnan(value) or value <= -1.0:  # C's cast toward zero: (-1, 0) is category 0, below is negative
            return False
        code = int(value)
        for i in range(node["cat_from"], node["cat_to"]):
            if categories[i] == code:
                return True
        return False
    if math.isnan(value) and node["missing"] != 2:
        value = 0.0
    if (node["missing"] == 1 and value == 0.0) or (node["missing"] == 2 and math.isnan(value)):
        return node["default_left"] == 1
    return value <= node["threshold"]


@njit
def leaf_of(x: np.ndarray, nodes: np.ndarray, root: int, categories: np.ndarray) -> int:
    """The leaf node row X reaches from ROOT."""
    n = root
    while nodes[n]["kind"] != 0:
        n = n + 1 if goes_left(x, nodes[n], categories) else nodes[n]["right"]
    return n


@njit
def leaves(x: np.ndarray, nodes: np.ndarray, roots: np.ndarray, categories: np.ndarray, leaf_index: np.ndarray,
           out: np.ndarray) -> None:
    """The leaf (LightGBM's numbering) each tree sends row X to."""
    for t in range(roots.shape[0]):
        out[t] = leaf_index[leaf_of(x, nodes, roots[t], categories)]


LOCKSTEP = 32
"""Trees `raw` follows down at once."""


@njit
def raw(x: np.ndarray, nodes: np.ndarray, roots: np.ndarray, categories: np.ndarray) -> float:
    """Row X's raw score: its leaves' values added tree by tree, in LightGBM's order (so to the same bits).

    The row goes down LOCKSTEP trees at once, one level of each in turn, rather than one tree to its leaf and then
    the next: the nodes of one level of different trees do not depend on each other, so the processor fetches
    their cache lines together instead of waiting for one miss after another. On the load bench's 1,287-tree model
    (`bench/treeshap_bench.py`) that made it 1.49x (trees in cache) and 1.56x (evicted) sooner than LightGBM's
    single-row call, where following one tree at a time had been 1.24x and 1.05x."""
    total = 0.0
    at = np.empty(LOCKSTEP, dtype=np.int64)
    for first in range(0, roots.shape[0], LOCKSTEP):
        m = min(LOCKSTEP, roots.shape[0] - first)
        for k in range(m):
            at[k] = roots[first + k]
        moving = m
        while moving > 0:
            moving = 0
            for k in range(m):
                n = at[k]
                if nodes[n]["kind"] != 0:
                    at[k] = n + 1 if goes_left(x, nodes[n], categories) else nodes[n]["right"]
                    moving += 1
        for k in range(m):
            total += nodes[at[k]]["threshold"]
    return total


@njit
def explain(x: np.ndarray, nodes: np.ndarray, roots: np.ndarray, categories: np.ndarray, path_feature: np.ndarray,
            path_z: np.ndarray, weights: np.ndarray, depth: int, out: np.ndarray) -> None:
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
            while nodes[n]["kind"] != 0:
                node = nodes[n]
                left = goes_left(x, node, categories)
                bit = np.int64(1) << node["slot"]
                if node["new_slot"] == 1:
                    left_bits = bits | bit if left else bits
                    right_bits = bits if left else bits | bit
                else:
                    left_bits = bits if left else bits & ~bit
                    right_bits = bits & ~bit if left else bits
                stack_node[top] = node["right"]
                stack_bits[top] = right_bits
                top += 1
                n += 1
                bits = left_bits
            at = nodes[n]["cat_from"]
            d = nodes[n]["cat_to"] - at
            if d == 0:
                continue
            # the product over agreeing slots of (z + t), and the product of the other slots' z
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
            v = nodes[n]["threshold"] * others
            w = weights[d]
            if degree < d:  # a slot the row disagrees with gets -v * sum_s w(s) poly[s]
                total = 0.0
                for i in range(degree + 1):
                    total += w[i] * poly[i]
                for k in range(d):
                    if not bits >> k & 1:
                        out[path_feature[at + k]] -= v * total
            for k in range(d):  # an agreeing slot: its factor divided out of the polynomial, times v (1 - z)
                if bits >> k & 1:
                    z = path_z[at + k]
                    part[degree - 1] = poly[degree]
                    for i in range(degree - 1, 0, -1):
                        part[i - 1] = poly[i] - z * part[i]
                    total = 0.0
                    for i in range(degree):
                        total += w[i] * part[i]
                    out[path_feature[at + k]] += v * (1.0 - z) * total
