"""Edit one section of a user's ``endpoints.yml`` and leave every other byte alone.

Rasa reads ``endpoints.yml`` with ruamel.yaml (YAML 1.2). Loading a user's file and dumping it
again -- with any library -- drops comments and formatting, and with a YAML 1.1 library
(PyYAML) it also changes meaning when Rasa reads it back: ``05432`` became 2842, ``off``
became false, ``1:30`` became 90, a quoted ``"${DB_HOST}"`` lost its quotes.

So the file is never re-dumped. :func:`splice` parses it with ruamel.yaml's round-trip loader
only to learn on which lines each top-level section starts, then replaces (or removes, or
inserts) the lines of the one section Turnstile writes. Everything else -- other sections,
comments, blank lines, quoting, key order, scalars -- is the user's text, unchanged. Only a
file whose top level is a flow mapping (``{a: 1, b: 2}``, which has no lines to splice) is
re-emitted, by ruamel's round-trip dumper (comments and quoting kept, YAML 1.2 throughout).

Turnstile's own section is emitted by ruamel as YAML 1.2, block style, so what Rasa reads back
is exactly what was rendered (a ``key_prefix`` of ``0o17`` or ``1e3`` stays a string).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from turnstile.operator.model.errors import EndpointsYamlError

__all__ = ["dump_section", "load", "splice"]


def _yaml() -> YAML:
    yaml = YAML(typ="rt")  # round trip, YAML 1.2
    yaml.width = 4096  # never fold a long line
    yaml.preserve_quotes = True
    return yaml


def load(text: str | None) -> CommentedMap:
    """The file as ruamel's round-trip mapping; empty is ``{}``; not a mapping is an error."""
    if text is None or not text.strip():
        return CommentedMap()
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        mark = exc.problem_mark if isinstance(exc, MarkedYAMLError) else None
        raise EndpointsYamlError.not_yaml(None if mark is None else mark.line + 1) from None
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        plain = next((t for t in (list, str, bool, int, float) if isinstance(data, t)), None)
        raise EndpointsYamlError.not_mapping((plain or type(data)).__name__)
    return data


def _commented(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _commented(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_commented(v) for v in value]
    return value


def dump_section(name: str, content: Mapping[str, Any]) -> str:
    """``name:`` and ``content`` as YAML 1.2 text, block style, keys in the order given."""
    out = io.StringIO()
    yaml = _yaml()
    yaml.default_flow_style = False
    yaml.dump(_commented({name: content}), out)
    return out.getvalue()


def _trivia(line: str) -> bool:
    """A blank line or a comment at column 0: it belongs to what follows, not to a section."""
    stripped = line.strip()
    return not stripped or line.startswith("#")


def _end_of(lines: list[str], start: int, end: int) -> int:
    """``end`` moved back over top-level comments and blank lines that head the next part."""
    while end > start + 1 and _trivia(lines[end - 1]):
        end -= 1
    return end


def _with_newline(lines: list[str]) -> list[str]:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def splice(
    text: str | None, name: str, content: Mapping[str, Any] | None, order: Sequence[str] = ()
) -> str:
    """``text`` with section ``name`` set to ``content`` (removed when ``None``).

    A section already in the file is replaced where it is; a new one goes before the first
    section of ``order`` that ranks after it, else at the end. Returns ``text`` itself when
    the section already holds ``content``.
    """
    data = load(text)
    if content is None and name not in data:
        return text or ""
    if content is not None and name in data and data[name] == dict(content):
        return text or ""
    if not text or not text.strip():
        return "" if content is None else dump_section(name, content)
    if data.fa.flow_style():
        return _redump(data, name, content)
    lines = text.splitlines(keepends=True)
    block = [] if content is None else [dump_section(name, content)]
    keys = list(data)
    if name in data:
        i = keys.index(name)
        start = data.lc.key(name)[0]
        end = data.lc.key(keys[i + 1])[0] if i + 1 < len(keys) else len(lines)
        end = _end_of(lines, start, end)
        return "".join(lines[:start] + block + lines[end:])
    later = [k for k in keys if name in order and k in order and order.index(k) > order.index(name)]
    if later:
        at = data.lc.key(later[0])[0]
        while at > 0 and lines[at - 1].startswith("#"):
            at -= 1  # the comment heading that section stays with it
        return "".join(_with_newline(lines[:at]) + block + lines[at:])
    return "".join(_with_newline(lines) + block)


def _redump(data: CommentedMap, name: str, content: Mapping[str, Any] | None) -> str:
    if content is None:
        del data[name]
    else:
        data[name] = _commented(content)
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()
