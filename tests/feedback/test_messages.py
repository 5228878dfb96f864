"""`FRAUD_CUSTOMER_MESSAGES`: the shopper's texts, read strictly (a mistake is named, never served)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraud_service.errors import ConfigError
from fraud_service.feedback.messages import TEXTS, load


def test_a_file_replaces_the_texts_it_names_and_keeps_the_others(tmp_path: Path) -> None:
    code, other = list(TEXTS)[:2]
    path = tmp_path / "messages.json"
    path.write_text(f'{{"{code}": "  We are looking at your return.\\nThank you.  "}}', encoding="utf-8")
    messages = load(path)
    assert messages.texts[code] == "We are looking at your return.\nThank you."
    assert messages.texts[other] == TEXTS[other]


@pytest.mark.parametrize(("written", "problem"), [
    # a code twice: one text or the other was served, and the file did not say which (the API refuses such bodies)
    ('{"CODE": "first", "CODE": "second"}', "the code 'CODE' is written twice; write each once"),
    ('{"CODE": "a\\u0000b"}', "'CODE': contains a NUL character; expected plain text a shopper can be shown"),
    ('{"CODE": "a\\u001bb"}', "'CODE': holds the control character U+001B; expected plain text"),
    ('{"nope": "text"}', "'nope' is not a message code"),
    ('{"CODE": ""}', "'CODE': expected a sentence of 1 to"),
    ("[1]", "expected a JSON object of code -> text, got list"),
    ("{not json", "cannot be read as JSON"),
    ("[" * 30000 + "]" * 30000, "nests too deep to read"),  # under the 64 KiB limit; was a RecursionError
])
def test_a_mistake_in_the_file_is_named(tmp_path: Path, written: str, problem: str) -> None:
    path = tmp_path / "messages.json"
    path.write_text(written.replace("CODE", list(TEXTS)[0]), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value).startswith(f"FRAUD_CUSTOMER_MESSAGES={path}: ")
    assert problem.replace("CODE", list(TEXTS)[0]) in str(raised.value)
