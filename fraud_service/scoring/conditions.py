"""Conditions of the rules analysts write: comparisons of features with numbers or quoted text, joined by `and`,
`or` and `not`, with parentheses, e.g. `rfd_customers >= 3 and rt_refund_amount > 200`.

Parsed by a small recursive-descent parser into a tree that is evaluated against a feature vector: nothing is ever
handed to `eval`. A comparison with a missing value (None or NaN) is unknown, and so is `not` of an unknown; `and`
and `or` follow three-valued logic (false and unknown is false, true or unknown is true), and a rule fires only on
true: never on what is not known. `and` binds tighter than `or`. A number is compared only with a numeric feature
and quoted text only with a text feature (with == or !=), when the caller says which is which.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 500
MAX_COMPARISONS = 20
MAX_DEPTH = 20  # nested parentheses and nots
_TOKEN = re.compile(r"\s*(?:(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<text>'[^']*'|\"[^\"]*\")|"
                    r"(?P<op>>=|<=|==|!=|>|<)|(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")
_OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                               "<": operator.lt, "==": operator.eq, "!=": operator.ne}
Node = tuple[Any, ...]  # ("cmp", name, op, value) | ("and", a, b) | ("or", a, b) | ("not", a)


@dataclass(frozen=True)
class Condition:
    """A parsed condition: its text as written, the feature names it reads, and its tree."""

    text: str
    names: frozenset[str]
    tree: Node

    @classmethod
    def parse(cls, text: object, known: Mapping[str, str] | None) -> Condition:
        """TEXT parsed, or ValueError saying what is wrong and where. KNOWN: the names it may compare, each with
        its type ("number" or "text"); None accepts any name (a stored rule whose feature a later version dropped
        then reads as missing instead of stopping scoring)."""
        if not isinstance(text, str):
            raise ValueError(f"got {type(text).__name__}: a condition is text")
        if not text.strip():
            raise ValueError("got an empty condition")
        if len(text) > MAX_TEXT:
            raise ValueError(f"is {len(text)} characters long (at most {MAX_TEXT})")
        parser = _Parser(_tokens(text), known)
        tree = parser.expression()
        if parser.at < len(parser.tokens):
            raise ValueError(f"unexpected {parser.tokens[parser.at][1]!r} after a complete condition")
        if parser.comparisons > MAX_COMPARISONS:
            raise ValueError(f"holds {parser.comparisons} comparisons (at most {MAX_COMPARISONS})")
        return cls(text.strip(), frozenset(parser.names), tree)

    def holds(self, vector: Mapping[str, Any]) -> bool:
        """Whether the condition is true for VECTOR (unknown is not true)."""
        return _value(self.tree, vector) is True


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    text = text.rstrip()
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise ValueError(f"cannot read {text[at:].strip()[:20]!r} (character {at + 1})")
        kind = found.lastgroup or ""
        out.append((kind, found.group(kind)))
        at = found.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], known: Mapping[str, str] | None) -> None:
        self.tokens, self.known, self.at = tokens, known, 0
        self.names: set[str] = set()
        self.comparisons = 0
        self.depth = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _word(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == "word" and token[1].lower() == word:
            self.at += 1
            return True
        return False

    def expression(self) -> Node:
        node = self._conjunction()
        while self._word("or"):
            node = ("or", node, self._conjunction())
        return node

    def _conjunction(self) -> Node:
        node = self._term()
        while self._word("and"):
            node = ("and", node, self._term())
        return node

    def _term(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ValueError(f"nests more than {MAX_DEPTH} levels of parentheses and nots")
        try:
            if self._word("not"):
                return ("not", self._term())
            if self._peek() == ("paren", "("):
                self.at += 1
                node = self.expression()
                if self._peek() != ("paren", ")"):
                    raise ValueError("a '(' is not closed")
                self.at += 1
                return node
            return self._comparison()
        finally:
            self.depth -= 1

    def _comparison(self) -> Node:
        parts = self.tokens[self.at:self.at + 3]
        if len(parts) < 3 or parts[0][0] != "word" or parts[1][0] != "op" or parts[2][0] not in ("number", "text"):
            got = " ".join(p[1] for p in parts) or "the end"
            raise ValueError(f"expected a comparison such as `feature >= 3` at {got!r}")
        name, op, (kind, raw) = parts[0][1], parts[1][1], parts[2]
        if self.known is not None and name not in self.known:
            raise ValueError(f"{name!r} is not a feature (see GET /v1/rules for the names)")
        value: Any = float(raw) if kind == "number" else raw[1:-1]
        if kind == "text" and op not in ("==", "!="):
            raise ValueError(f"text can only be compared with == or != (got {name} {op} {raw})")
        wanted = "number" if kind == "number" else "text"
        if self.known is not None and self.known[name] != wanted:
            raise ValueError(f"{name} holds {self.known[name]}, not {wanted} (got {name} {op} {raw})")
        self.at += 3
        self.names.add(name)
        self.comparisons += 1
        return ("cmp", name, op, value)


def _value(node: Node, vector: Mapping[str, Any]) -> bool | None:
    """NODE's truth for VECTOR: True, False, or None when it depends on a missing value (three-valued logic)."""
    kind = node[0]
    if kind in ("and", "or"):
        left, right = _value(node[1], vector), _value(node[2], vector)
        decisive = kind == "or"  # true decides an or, false decides an and
        if left is decisive or right is decisive:
            return decisive
        return None if left is None or right is None else not decisive
    if kind == "not":
        inner = _value(node[1], vector)
        return None if inner is None else not inner
    _, name, op, value = node
    actual = vector.get(name)
    if actual is None or (isinstance(actual, float) and math.isnan(actual)):
        return None
    if isinstance(value, str):
        return _OPS[op](str(actual), value)
    try:
        return _OPS[op](float(actual), value)
    except (TypeError, ValueError):
        return None
