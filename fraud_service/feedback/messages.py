"""What the returns system may show the shopper: a code and one plain sentence for each outcome.

A message never accuses, never shows a score, a reason, a model detail or anything about another
customer: a review is "a little more time", a refusal offers a second look. The codes are fixed (the
returns system may branch on them); a retailer can reword the texts with a JSON file of code -> text
(FRAUD_CUSTOMER_MESSAGES), checked when the service starts.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraud_service.data.contract import repeated_key, shown_text_problem
from fraud_service.errors import ConfigError

TEXTS: dict[str, str] = {
    "refund_approved": "Your return is accepted and your refund is on its way.",
    "refund_after_inspection": "We'll refund you as soon as the item reaches our warehouse and is checked.",
    "store_credit": "We can refund this return as store credit.",
    "in_review": "We need a little more time to review this return. We'll be in touch soon.",
    "appeal_received": "Thank you for your message. We're taking another look at this return and will be in "
                       "touch soon.",
    "not_approved": "We're unable to approve a refund for this return. If you think this is a mistake, you can "
                    "ask us to look at it again.",
}
"""The default text of every code (docs/api.md has the same table)."""
MAX_TEXT = 500


def code_for(status: str, decision: str, appealed: bool) -> str:
    """The message code of an outcome: what the shopper can be told while it is pending, and once final."""
    if status == "pending_inspection":
        return "refund_after_inspection"
    if status == "pending_review":
        return "appeal_received" if appealed else "in_review"
    return {"approve": "refund_approved", "store_credit_only": "store_credit",
            "approve_after_inspection": "refund_after_inspection"}.get(decision, "not_approved")


@dataclass(frozen=True)
class Messages:
    texts: Mapping[str, str] = field(default_factory=lambda: dict(TEXTS))

    def message(self, status: str, decision: str, appealed: bool) -> dict[str, str]:
        code = code_for(status, decision, appealed)
        return {"code": code, "text": self.texts[code]}


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys each appear once: with a code written twice, one text or the other was taken, and
    the file did not say which (the API refuses such bodies)."""
    if (key := repeated_key(pairs)) is not None:
        raise ConfigError(f"the code {key[:100]!r} is written twice; write each once")
    return dict(pairs)


def _unshowable(text: str) -> tuple[str, str] | None:
    """What in TEXT a shopper's screen would not show as written: control characters (a new line aside)."""
    found = next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
    return None if found is None else (f"holds the control character U+{ord(found):04X}", "")


def load(path: Path | None) -> Messages:
    """The default texts, with those of the JSON file at PATH (code -> text) in their place; ConfigError naming
    the file and the entry when it is not readable or an entry is not a known code with a sentence."""
    if path is None:
        return Messages()
    where = f"FRAUD_CUSTOMER_MESSAGES={path}"
    try:
        if not path.is_file():
            raise ConfigError(f"{where}: not a regular file")
        if path.stat().st_size > 64 * 1024:
            raise ConfigError(f"{where}: larger than 64 KiB; expected a JSON object of code -> text")
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read as JSON ({exc})") from None
    try:
        given = json.loads(raw, object_pairs_hook=_once_each)
    except ConfigError as exc:  # a code written twice
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot be read as JSON ({exc})") from None
    except RecursionError:  # arrays in arrays, thousands deep: Python's reader gives up, not with a ValueError
        raise ConfigError(f"{where}: nests too deep to read; expected a JSON object of code -> text") from None
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: expected a JSON object of code -> text, got {type(given).__name__}")
    problems = []
    for code, text in given.items():
        if code not in TEXTS:
            problems.append(f"{code!r} is not a message code (expected one of {', '.join(TEXTS)})")
        elif not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            problems.append(f"{code!r}: expected a sentence of 1 to {MAX_TEXT} characters")
        elif (found := shown_text_problem(text)) is not None or (found := _unshowable(text)) is not None:
            problems.append(f"{code!r}: {found[0]}; expected plain text a shopper can be shown")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return Messages({**TEXTS, **{code: text.strip() for code, text in given.items()}})
