"""The Redis store's line of this process's waiters (``locks.redis._LoopState``), without Redis.

Of one conversation's waiters in a process only the first in line blocks in Redis; a waiter that
re-entered at the back after a failover (``docs/locks.md``, "Failover") has a new number, and
its place in this line must move with it, waking whoever is first now.
"""

from __future__ import annotations

from turnstile.stores.locks.redis import _LoopState


def _state() -> _LoopState:
    return _LoopState(connection=None, wait_connections=4)  # type: ignore[arg-type]


async def test_a_renumbered_waiter_moves_to_its_new_place_and_the_new_first_is_woken() -> None:
    state = _state()
    first, second, third = (state.enter("c", n) for n in (10, 20, 30))
    assert first.turn.is_set() and state.is_first("c", first)
    second.turn.clear()
    state.renumber("c", first, 40)  # re-entered at the back
    assert [w.number for w in state.lines["c"]] == [20, 30, 40]
    assert state.is_first("c", second) and second.turn.is_set()
    for waiter in (second, third, first):
        state.leave("c", waiter)
    assert "c" not in state.lines


async def test_a_waiter_renumbered_in_front_stays_first() -> None:
    state = _state()
    only = state.enter("c", 10)
    state.renumber("c", only, 11)
    assert state.is_first("c", only) and only.number == 11
