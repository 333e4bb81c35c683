"""A store section's fingerprint: what a bot pod checks before it serves (fail closed).

The operator renders a ``lock_store`` or ``timer_store`` section into a bot's ``endpoints.yml``
and puts the section's fingerprint in the bot's pod template as an env var
(:data:`EXPECT_ENV`); ``turnstile-rasa`` compares the file it is about to hand Rasa with it
(:mod:`turnstile.rasa.startup`) and refuses to start Rasa on a file without that section, or with
another one (a writer that replaced the file, a stale copy), on which Rasa would silently fall
back to its in-memory lock store.

The fingerprint is taken over the section as parsed (YAML 1.2, as Rasa reads it), ``${VAR}``
references unexpanded, without a lock store's transition keys (:data:`TRANSITION_KEYS`): those
are added and removed during a move between stores without a rollout, and the pods of the new
store must start either way. Nothing secret is in a section (passwords are ``${VAR}``), and the
digest says nothing of it anyway.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from turnstile.stores.config import TRANSITION_KEYS

__all__ = [
    "EXPECT_ENV",
    "REQUIRE_ENV",
    "SECTIONS",
    "STORES_FILES",
    "STORES_FILE_ENV",
    "section_fingerprint",
]

#: The sections Turnstile renders, in their order in the file.
SECTIONS: Final = ("lock_store", "timer_store")
#: The env var the operator sets, per section, to the fingerprint of what it rendered.
EXPECT_ENV: Final = {
    "lock_store": "TURNSTILE_EXPECT_LOCK_STORE",
    "timer_store": "TURNSTILE_EXPECT_TIMER_STORE",
}
#: The env var a bot's own manifest sets (``lock_store``, ``timer_store``, comma separated):
#: sections that must be there before Rasa starts, also before the operator has rendered any.
REQUIRE_ENV: Final = "TURNSTILE_REQUIRE_SECTIONS"
#: The env var that says which file the pod's Rasa reads the sections from: ``endpoints`` (the
#: ``--endpoints`` file; the default) or ``integrations`` (``integrations.yml`` in the project
#: root of a Rasa Pro engine project, which Rasa then reads instead of ``endpoints.yml``). The
#: operator sets ``integrations`` for a store with ``spec.configMap.format: integrations``.
STORES_FILE_ENV: Final = "TURNSTILE_STORES_FILE"
STORES_FILES: Final = ("endpoints", "integrations")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def section_fingerprint(section: Mapping[str, Any]) -> str:
    """``sha256:`` and 24 hex digits over the section's canonical JSON, transition keys out."""
    plain = {k: v for k, v in _canonical(section).items() if k not in TRANSITION_KEYS}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:24]


#: ``${`` is hidden from the parser behind a private-use character: Rasa registers an implicit
#: ``${...}`` resolver on ruamel.yaml's classes when it is imported (``rasa.shared.utils.io``),
#: which would expand the references from the env (or fail without them), and the fingerprint
#: is over the references as written.
_MASK: Final = "\ue000{"


def _unmask(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_MASK, "${")
    if isinstance(value, Mapping):
        return {_unmask(k): _unmask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmask(v) for v in value]
    return value


def load_file(text: str) -> Any:
    """A bot's endpoints file as Rasa reads it (YAML 1.2, ruamel.yaml: a dependency of every
    Rasa and of the operator, imported here only when called), ``${VAR}`` left as written.
    The launcher checks a pod's file with it, and the operator pins a rollout with it, so both
    fingerprint the same values."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - only where a file is read

    if "\ue000" in text:
        return YAML(typ="safe", pure=True).load(text)
    return _unmask(YAML(typ="safe", pure=True).load(text.replace("${", _MASK)))


@functools.lru_cache(maxsize=256)
def file_fingerprint(text: str | None, section: str) -> str | None:
    """The fingerprint of ``section`` in the file ``text`` (``None``: no such section, or not
    a file Rasa could load). Cached: the operator's rollout sync asks for each file once per
    store and workload on every pass, and the answer depends on the text alone."""
    if text is None:
        return None
    try:
        data = load_file(text)
    except Exception:  # any parser error: no section to pin
        return None
    content = data.get(section) if isinstance(data, Mapping) else None
    return section_fingerprint(content) if isinstance(content, Mapping) else None
