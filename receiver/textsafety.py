"""Text a database can store: no NUL (PostgreSQL refuses it) and no unpaired surrogates (not UTF-8)."""

from __future__ import annotations

import re

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "must not contain NUL or unpaired surrogate characters"


def is_decimal(text: str) -> bool:
    """Only the ASCII digits 0-9. `str.isdigit` alone also takes "²" (which `int` refuses) and
    other scripts' digits (which `int` reads): numbers from the wire are plain ASCII or refused."""
    return text.isascii() and text.isdigit()


def is_storable(value: str) -> bool:
    return UNSTORABLE.search(value) is None


def storable(value: str | None) -> str | None:
    """`value` with every unstorable character replaced by U+FFFD (for text we keep as evidence)."""
    if value is None or (value.isascii() and "\x00" not in value):  # most: ASCII holds no surrogate
        return value
    return UNSTORABLE.sub("\ufffd", value)
