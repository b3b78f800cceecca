"""Ids are ULIDs: time first, in Crockford's base 32, so they sort by creation time."""

from __future__ import annotations

import os
import re

from receiver.models import new_id, ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def spelled_five_bits_at_a_time(milliseconds: int, randomness: bytes) -> str:
    value = (milliseconds << 80) | int.from_bytes(randomness, "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def test_the_specs_example_time_and_the_extremes():
    # The ULID specification's example: 1469918176385 ms spells 01ARYZ6S41.
    assert ulid(1469918176385, bytes(10)) == "01ARYZ6S41" + "0" * 16
    assert ulid(0, b"\xff" * 10) == "0" * 10 + "Z" * 16
    assert ulid(2**48 - 1, b"\xff" * 10) == "7" + "Z" * 25  # the largest ULID


def test_every_digit_is_spelled_as_five_bits_at_a_time_would():
    for _ in range(2000):
        milliseconds, randomness = int.from_bytes(os.urandom(6), "big"), os.urandom(10)
        assert ulid(milliseconds, randomness) == spelled_five_bits_at_a_time(milliseconds, randomness)


def test_new_ids_are_ulids_of_now_and_sort_by_time():
    first = new_id()
    assert re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", first)
    assert new_id()[:10] >= first[:10]
