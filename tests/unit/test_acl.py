"""The documented ACL rule covers every command the stores send, scripts included.

Redis checks each ``redis.call``/``redis.pcall`` inside a script against the user running
it, so the rule must list them; this parses the scripts as they are now, so a script that
starts calling a new command fails here until ``turnstile.stores.acl`` lists it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import re
from types import ModuleType

import pytest

import turnstile.stores.locks.lua as lock_lua
import turnstile.stores.locks.redis as lock_redis
import turnstile.stores.timers.lua as timer_lua
import turnstile.stores.timers.redis as timer_redis
from turnstile.stores._redis import connection, multiplexed, scripts
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.acl import Store, acl_rule, key_pattern, permissions

pytestmark = pytest.mark.unit

_ANY_CALL = re.compile(r"redis\.p?call\s*\(")
_LITERAL_CALL = re.compile(r"""redis\.p?call\s*\(\s*(['"])([A-Za-z|]+)\1""")
#: redis-py client methods that are not Redis commands.
_NOT_COMMANDS = frozenset({"pipeline", "execute", "close", "aclose", "initialize"})
_METHOD_CALL = re.compile(r"\b(?:client|c|pipe|cluster)\.([a-z_]+)\(")
#: ``execute_command("EVALSHA", ...)``, ``conn.call("EVAL", ...)``, ``("SELECT", db)``.
_RAW_COMMAND = re.compile(r"""\(\s*"([A-Z]{3,})"(?:,\s*"([A-Z]+)")?""")


#: Error reply codes the connection code names (not commands), and AUTH (open to every user).
_REPLY_CODES = frozenset(
    {*multiplexed._ERRORS, *(r.split()[0] for r in connection._RETRYABLE_REPLIES), "AUTH"}
)


def _scripts(module: ModuleType) -> list[LuaScript]:
    found = [v for v in vars(module).values() if isinstance(v, LuaScript)]
    assert found, f"no LuaScript in {module.__name__}"
    return found


def _script_commands(module: ModuleType) -> set[str]:
    commands: set[str] = set()
    for script in _scripts(module):
        calls = len(_ANY_CALL.findall(script.source))
        literal = [m.group(2).upper() for m in _LITERAL_CALL.finditer(script.source)]
        assert len(literal) == calls, (
            f"{script.name}: a redis.call with a computed command name cannot be checked "
            "against the ACL rule; name the command literally"
        )
        commands.update(literal)
    return commands


def _python_commands(*modules: ModuleType) -> set[str]:
    commands: set[str] = set()
    for module in modules:
        source = inspect.getsource(module)
        commands.update(
            m.group(1).upper() for m in _METHOD_CALL.finditer(source)
            if m.group(1) not in _NOT_COMMANDS and "_" not in m.group(1)
        )
        for m in _RAW_COMMAND.finditer(source):
            first, second = m.group(1), m.group(2)
            if first in {"CLIENT", "CLUSTER", "SENTINEL", "ACL"} and second:
                commands.add(f"{first}|{second}")
            elif first not in _REPLY_CODES:
                commands.add(first)
    return commands


_SHARED = (connection, multiplexed, scripts)
CASES: list[tuple[Store, ModuleType, ModuleType]] = [
    ("lock_store", lock_lua, lock_redis),
    ("timer_store", timer_lua, timer_redis),
]


@pytest.mark.parametrize(("store", "lua", "code"), CASES, ids=["locks", "timers"])
def test_every_script_command_is_in_the_rule(
    store: Store, lua: ModuleType, code: ModuleType
) -> None:
    allowed = {p.command for p in permissions(store)}
    used = _script_commands(lua)
    assert used, "the parser found no commands"
    assert used <= allowed, f"missing from the {store} rule: {sorted(used - allowed)}"


@pytest.mark.parametrize(("store", "lua", "code"), CASES, ids=["locks", "timers"])
def test_every_command_the_python_code_sends_is_in_the_rule(
    store: Store, lua: ModuleType, code: ModuleType
) -> None:
    allowed = {p.command for p in permissions(store)}
    used = _python_commands(code, *_SHARED)
    assert {"EVAL", "EVALSHA", "SELECT", "CLIENT|SETNAME"} <= used  # the parser sees them
    assert used <= allowed, f"missing from the {store} rule: {sorted(used - allowed)}"


def test_the_rule_is_the_commands_on_the_store_keys_only() -> None:
    rule = acl_rule("lock_store", "bot")
    assert rule[:4] == ["resetkeys", "~bot:turnstile:lock:*", "resetchannels", "-@all"]
    assert "+blpop" in rule and "+eval" in rule and "+client|setname" in rule
    assert not any(r in rule for r in ("+@all", "~*", "+keys", "+flushall"))
    assert key_pattern("timer_store") == "turnstile:timers:*"
    assert "+cluster|slots" in acl_rule("timer_store", cluster=True)
    assert "+cluster|slots" not in acl_rule("timer_store")


@pytest.mark.parametrize("prefix", [None, "bot"])
def test_every_key_the_stores_make_matches_the_rule_pattern(prefix: str | None) -> None:
    lock_pattern = key_pattern("lock_store", prefix)
    queue = lock_redis.queue_key("conversation {with} odd:chars", prefix)
    keys = [queue]
    if hasattr(lock_redis, "wake_key"):  # the wake-up lists, while there are any
        keys.append(lock_redis.wake_key(queue, "ticket-id"))
    for key in keys:
        assert fnmatch.fnmatchcase(key, lock_pattern), (key, lock_pattern)
    timer_pattern = key_pattern("timer_store", prefix)
    for bucket in timer_lua.TimerKeys(4, prefix).buckets:
        for key in dataclasses.astuple(bucket):
            assert fnmatch.fnmatchcase(key, timer_pattern), (key, timer_pattern)
