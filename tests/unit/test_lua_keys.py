"""Every key a Lua script touches is declared in KEYS (Redis' EVAL contract).

Redis Cluster, AWS ElastiCache (Serverless Valkey too) and Dragonfly route and lock a script by
its declared keys; a key a script builds itself (a literal, an ARGV, a concatenation) may live
elsewhere and is refused there. This test tokenizes every script of the lock and timer stores
(the ``LuaScript`` objects themselves, not the Python files), finds each ``redis.call`` /
``redis.pcall``, and requires each key argument to be ``KEYS[<n>]`` or a local bound once to
exactly ``KEYS[<n>]``. Key positions come from the table below: a command missing from it fails
the test until its key positions are added.
"""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.locks import lua as lock_lua
from turnstile.stores.timers import lua as timer_lua

#: Which arguments (after the command name) are keys: "first", "all", or "none".
KEY_POSITIONS: dict[str, str] = {
    **dict.fromkeys(
        [
            "GET", "SET", "INCR", "PEXPIRE", "EXPIRE", "PTTL", "TYPE",
            "HGET", "HSET", "HSETNX", "HDEL", "HEXISTS", "HGETALL", "HLEN", "HMGET", "HINCRBY",
            "ZADD", "ZREM", "ZSCORE", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZCARD",
            "ZRANK", "RPUSH", "LPUSH", "LLEN", "LRANGE",
        ],
        "first",
    ),
    **dict.fromkeys(["DEL", "EXISTS", "UNLINK", "TOUCH"], "all"),
    "TIME": "none",
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<long_comment>--\[(?P<lc_eq>=*)\[.*?\](?P=lc_eq)\])
  | (?P<comment>--[^\n]*)
  | (?P<long_string>\[(?P<ls_eq>=*)\[.*?\](?P=ls_eq)\])
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<number>0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[-+*/%^\#<>=(){}\[\];:,.])
    """,
    re.VERBOSE | re.DOTALL,
)

#: Tokens that, right after ``KEYS[n]``, would make the value something else than the key.
_CONTINUATIONS = frozenset({"..", "+", "-", "*", "/", "%", "^", "[", ".", ":", "(", "or", "and"})


def tokenize(source: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens of Lua source, comments and blanks dropped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ValueError(f"cannot tokenize Lua at {source[pos:pos + 30]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind in ("lc_eq", "ls_eq"):  # a nested group: take its parent
            kind = "long_comment" if match.group("long_comment") else "long_string"
        if kind not in ("space", "comment", "long_comment"):
            tokens.append(("string" if kind == "long_string" else kind, match.group()))
        pos = match.end()
    return tokens


def _is_keys_index(tokens: list[tuple[str, str]], i: int) -> bool:
    """``KEYS [ <integer> ]`` starts at ``tokens[i]``."""
    window = [text for _, text in tokens[i:i + 4]]
    return (
        len(window) == 4 and window[0] == "KEYS" and window[1] == "[" and window[3] == "]"
        and tokens[i + 2][0] == "number"
    )


def key_names(tokens: list[tuple[str, str]]) -> set[str]:
    """Names assigned exactly ``KEYS[n]`` and never anything else."""
    bound: set[str] = set()
    other: set[str] = set()
    for i, (kind, text) in enumerate(tokens[:-1]):
        if kind != "name" or tokens[i + 1][1] != "=":
            continue
        rhs = i + 2
        follower = tokens[rhs + 4][1] if rhs + 4 < len(tokens) else ""
        single = i == 0 or tokens[i - 1][1] != ","  # not ``local a, b = ...``
        if single and _is_keys_index(tokens, rhs) and follower not in _CONTINUATIONS:
            bound.add(text)
        else:
            other.add(text)
    return bound - other


def calls(tokens: list[tuple[str, str]]) -> list[list[list[tuple[str, str]]]]:
    """The argument lists (each a token list) of every ``redis.call`` / ``redis.pcall``."""
    found = []
    for i in range(len(tokens) - 3):
        if [t for _, t in tokens[i:i + 2]] != ["redis", "."]:
            continue
        if tokens[i + 2][1] not in ("call", "pcall") or tokens[i + 3][1] != "(":
            continue
        args: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for tok in tokens[i + 4:]:
            if tok[1] in ("(", "{", "["):
                depth += 1
            elif tok[1] in (")", "}", "]"):
                if depth == 0:
                    break
                depth -= 1
            elif tok[1] == "," and depth == 0:
                args.append([])
                continue
            args[-1].append(tok)
        found.append(args)
    return found


def undeclared_keys(source: str) -> list[str]:
    """Every key argument not derived from KEYS, as ``"<COMMAND> <argument>"``."""
    tokens = tokenize(source)
    names = key_names(tokens)
    problems = []
    for args in calls(tokens):
        head = args[0]
        if len(head) != 1 or head[0][0] != "string":
            problems.append(f"command name not a literal: {' '.join(t for _, t in head)}")
            continue
        command = head[0][1][1:-1].upper()
        spec = KEY_POSITIONS.get(command)
        if spec is None:
            problems.append(f"{command}: key positions unknown (add it to KEY_POSITIONS)")
            continue
        rest = args[1:] if args[1:] != [[]] else []
        keys = {"first": rest[:1], "all": rest, "none": []}[spec]
        for arg in keys:
            text = " ".join(t for _, t in arg)
            if len(arg) == 1 and arg[0][0] == "name" and arg[0][1] in names:
                continue
            if len(arg) == 4 and _is_keys_index(arg, 0):
                continue
            problems.append(f"{command} {text}")
    return problems


def scripts_of(module: ModuleType) -> dict[str, LuaScript]:
    return {name: v for name, v in vars(module).items() if isinstance(v, LuaScript)}


LOCK_SCRIPTS = scripts_of(lock_lua)
TIMER_SCRIPTS = scripts_of(timer_lua)


def test_the_scripts_are_found() -> None:
    assert {"ISSUE", "CHECK", "RENEW", "RELEASE", "STATE", "SAVE", "DELETE"} <= set(LOCK_SCRIPTS)
    assert len(TIMER_SCRIPTS) >= 7


@pytest.mark.parametrize(
    "name",
    sorted(f"locks.{n}" for n in LOCK_SCRIPTS) + sorted(f"timers.{n}" for n in TIMER_SCRIPTS),
)
def test_every_key_a_script_touches_is_declared(name: str) -> None:
    tier, attr = name.split(".")
    script = (LOCK_SCRIPTS if tier == "locks" else TIMER_SCRIPTS)[attr]
    assert calls(tokenize(script.source)), "no redis.call found: the parser is off"
    assert undeclared_keys(script.source) == []


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("redis.call('GET', 'literal')", "GET 'literal'"),
        ("redis.call('DEL', ARGV[1])", "DEL ARGV [ 1 ]"),
        ("local Q = KEYS[1]\nredis.call('RPUSH', Q .. ':w:' .. ARGV[1], 1)",
         "RPUSH Q .. ':w:' .. ARGV [ 1 ]"),
        ("local w = KEYS[1] .. ':w'\nredis.call('LLEN', w)", "LLEN w"),
        ("local Q = KEYS[1]\nQ = ARGV[1]\nredis.call('HLEN', Q)", "HLEN Q"),
        ("local a, Q = 0, KEYS[1]\nredis.call('HLEN', Q)", "HLEN Q"),
        ("redis.pcall('EXISTS', KEYS[1], KEYS[2] .. 'x')", "EXISTS KEYS [ 2 ] .. 'x'"),
        ("redis.call('XADD', KEYS[1])", "XADD: key positions unknown (add it to KEY_POSITIONS)"),
        ("local c = 'GET'\nredis.call(c, KEYS[1])", "command name not a literal: c"),
    ],
)
def test_the_checker_catches_undeclared_keys(source: str, problem: str) -> None:
    assert undeclared_keys(source) == [problem]


def test_the_checker_accepts_declared_keys() -> None:
    source = """
local Q = KEYS[1]
local D = KEYS[3]  -- a comment with redis.call('GET', 'x')
redis.call('HSET', Q, 'f', ARGV[1])
redis.call('RPUSH', KEYS[2], unpack({'0', '0'}))
redis.call('DEL', Q, D)
redis.call('TIME')
local s = [[redis.call('GET', 'in a long string')]]
"""
    assert undeclared_keys(source) == []
