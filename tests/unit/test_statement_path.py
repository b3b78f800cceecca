"""When the group committer tries its one-statement path (`StatementPath`)."""

from __future__ import annotations

import pytest

from receiver.callbacks.groupcommit import StatementPath


def run(path: StatementPath, outcomes) -> list[bool]:
    """Feed each batch's outcome (stored whole or not) to the path when it tries; what it chose."""
    chosen = []
    for whole in outcomes:
        tried = path.should_try()
        chosen.append(tried)
        if tried:
            path.tried_with(whole)
    return chosen


def test_batches_stored_whole_keep_it_on():
    path = StatementPath()
    assert run(path, [True] * 100) == [True] * 100


def test_when_batches_are_rarely_stored_whole_it_is_tried_only_to_probe():
    path = StatementPath(worth=0.25, probe_every=16, weight=0.1)
    chosen = run(path, [False] * 200)
    first_skip = chosen.index(False)
    assert 0.9 ** first_skip <= 0.25 < 0.9 ** (first_skip - 1)  # the share fell below `worth`
    assert path.whole_share == 0.2  # and stops at the floor
    after = chosen[first_skip:]
    assert sum(after) == len(after) // 16  # one batch in 16, no more
    assert all(after[i] == ((i + 1) % 16 == 0) for i in range(len(after)))


def test_a_change_of_traffic_turns_it_back_on_at_the_next_probe():
    path = StatementPath(worth=0.25, probe_every=16, weight=0.1)
    run(path, [False] * 100)
    chosen = run(path, [True] * 40)
    back = chosen.index(True)
    assert back < 16 and all(chosen[back:])  # the next probe succeeds, and it stays on


def test_a_floor_that_one_probe_could_not_lift_is_refused():
    with pytest.raises(ValueError):
        StatementPath(worth=0.25, weight=0.1, floor=0.1)


def test_a_mix_above_the_break_even_keeps_it_on():
    path = StatementPath(worth=0.25, probe_every=16, weight=0.1)
    # Every other batch stored whole: about half, well above a quarter.
    assert all(run(path, [True, False] * 100))
    assert path.skipped == 0 and path.tried == 200
