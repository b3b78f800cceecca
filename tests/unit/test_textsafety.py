"""storable: what a database cannot store is replaced, everything else is kept as it is."""

from __future__ import annotations

import pytest

from receiver.textsafety import is_storable, storable


@pytest.mark.parametrize("text, kept", [
    ("plain ascii", "plain ascii"),
    ("nul\x00inside", "nul\ufffdinside"),  # ASCII, yet not storable
    ("\x00", "\ufffd"),
    ("caf\u00e9 \u4f60\u597d \U0001f600", "caf\u00e9 \u4f60\u597d \U0001f600"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ("\udfff\x00", "\ufffd\ufffd"),
    ("", ""),
])
def test_storable_replaces_only_nul_and_unpaired_surrogates(text, kept):
    assert storable(text) == kept
    assert is_storable(storable(text))


def test_none_stays_none():
    assert storable(None) is None
