"""The key helpers ``turnstile locks ls`` uses: SCAN patterns and key -> conversation id."""

from __future__ import annotations

import pytest

from turnstile.stores.locks.redis import conversation_of, queue_key, queue_key_pattern


@pytest.mark.parametrize("cid", ["plain", "", "%", "a{b}c", "50%7B", "x*y?[z]\\"])
@pytest.mark.parametrize("prefix", [None, "bot1", "we*ird"])
def test_conversation_of_inverts_queue_key(cid: str, prefix: str | None) -> None:
    assert conversation_of(queue_key(cid, prefix), prefix) == cid


def test_wake_lists_and_other_keys_are_not_conversations() -> None:
    key = queue_key("c")
    assert conversation_of(f"{key}:x") is None
    assert conversation_of(f"{key}:d:17") is None
    assert conversation_of(key, "other") is None
    assert conversation_of("turnstile:timers:{3}:due") is None


def test_patterns_escape_glob_characters() -> None:
    assert queue_key_pattern() == "turnstile:lock:{*}"
    assert queue_key_pattern("", "bot") == "bot:turnstile:lock:{*}"
    assert queue_key_pattern("a*{", "p?") == "p\\?:turnstile:lock:{a\\*%7B*}"
