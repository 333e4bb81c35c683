"""Which bot containers run Rasa without Turnstile's launcher: a pure reading of a pod spec.

Rasa Pro builds its timer manager by ``type``; only the ``turnstile-rasa`` launcher (or
``turnstile.rasa.install()`` in a program that embeds Rasa) makes it build Turnstile's, whose
pending timers survive rollouts. A bot that loads Turnstile's timer store through plain
``rasa`` loses every pending session timer at each rollout, including the rollouts this
operator starts. The operator can see a container's ``command`` and ``args`` (and its image,
whose entrypoint Rasa's images set to ``rasa``); this module decides from them alone:

* a token ``turnstile-rasa`` (any path) or ``turnstile.rasa.launcher`` (``python -m``) anywhere
  in the command line: launched, fine;
* else a token ``rasa`` (any path, also ``python -m rasa``, also inside ``sh -c "..."``):
  plain Rasa, reported;
* no ``command`` and one of Rasa's own images (``rasa/rasa``, ``rasa/rasa-pro``, or from Rasa's
  ``rasa-releases`` registry), whose entrypoint is ``rasa``: plain Rasa, reported;
* anything else (a wrapper script, an image of the user's own): not knowable, not reported.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_LAUNCHERS: Final = frozenset({"turnstile-rasa", "turnstile.rasa.launcher"})


@dataclass(frozen=True)
class PlainRasa:
    """A container that runs Rasa without Turnstile's timer manager, and how that was seen."""

    container: str
    seen: str

    def message(self, workload: str, stores: Iterable[str]) -> str:
        names = ", ".join(sorted(stores))
        return (
            f"{workload} container {self.container!r} {self.seen}, so Rasa wraps Turnstile's "
            f"timer store ({names}) in its in-memory timer manager: pending session timers "
            "are lost at every rollout and never fire on another pod; run it as "
            '`command: ["turnstile-rasa"]` with the same args (docs/install.md)'
        )


def _tokens(words: Iterable[Any]) -> list[str]:
    tokens: list[str] = []
    for word in words:
        if isinstance(word, str):
            tokens.extend(word.replace(";", " ").replace("&&", " ").split())
    return tokens


def _is_rasa_image(image: Any) -> bool:
    """One of Rasa's published images (their entrypoint is ``rasa``); a user's own image may
    have any entrypoint."""
    if not isinstance(image, str):
        return False
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    parts = repository.split("/")
    if "rasa-releases" in parts:
        return True
    return len(parts) >= 2 and parts[-2] == "rasa" and parts[-1] in {"rasa", "rasa-pro"}


def plain_rasa(container: Mapping[str, Any]) -> PlainRasa | None:
    """How ``container`` runs plain Rasa, or None if it uses the launcher or cannot be told."""
    name = str(container.get("name") or "?")
    command = container.get("command") or []
    args = container.get("args") or []
    tokens = _tokens([*command, *args])
    bases = {posixpath.basename(t.strip("'\"")) for t in tokens}
    if bases & _LAUNCHERS:
        return None
    if "rasa" in bases:
        return PlainRasa(name, "runs `rasa` (its command line names no turnstile-rasa)")
    if not command and _is_rasa_image(container.get("image")):
        return PlainRasa(
            name, "runs its image's entrypoint, plain `rasa` (no command is set)"
        )
    return None


def plain_rasa_containers(pod_spec: Mapping[str, Any] | None) -> list[PlainRasa]:
    """Every container of a pod template's spec that runs plain Rasa."""
    containers = (pod_spec or {}).get("containers") or []
    found = [plain_rasa(c) for c in containers if isinstance(c, Mapping)]
    return [f for f in found if f is not None]
