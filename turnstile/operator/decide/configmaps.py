"""The ConfigMap a store renders into, decided as data: pure functions over raw objects.

Rules (each one a user can observe):

* The section is merged into the key with :func:`turnstile.operator.decide.render.merge_section`;
  every other section and every other key stays as it was.
* A ConfigMap Turnstile **creates** is owned by the stores that write to it
  (``ownerReferences``), so Kubernetes garbage-collects it with the last of them.
* A ConfigMap that **existed before** Turnstile first wrote to it is never owned (deleting a
  store must not delete a user's file); it is marked with the annotation
  ``turnstile.dev/pre-existing: "true"``.
* A ``lock_store`` section is also recorded as rendered (annotation
  ``turnstile.dev/rendered-lock-store``): a LockStore's transition starts from what the
  operator rendered (what pods were rolled onto), never from a hand edit of the file.
* Every ConfigMap Turnstile writes carries ``app.kubernetes.io/managed-by: turnstile`` and the
  annotation ``turnstile.dev/sections``: a JSON map from ``<key>/<section>`` to the store that
  wrote it (``LockStore/name``), so deleting a store removes only a section it wrote.

With a **base** (``spec.configMap.base``) the key is composed: the base's text (the user's own
sections) with every store's section merged in, each store's as the key holds it now. Anything
else written into that key (a hand edit, a section nobody owns) is gone at the next write: the
composed key is the operator's alone, and the user edits the base.

The functions return the new object (with the ``resourceVersion`` that was read, so a
concurrent writer makes the API answer 409 and the caller re-reads) or ``None`` when there is
nothing to write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from turnstile.operator.decide.render import (
    conflicts,
    current_section,
    decided_section,
    endpoints_problem,
    merge_section,
    target,
)
from turnstile.operator.decide.render import section as rendered_section
from turnstile.operator.decide.transition import Decision
from turnstile.operator.model.errors import BaseError, EndpointsYamlError
from turnstile.operator.model.kinds import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PRE_EXISTING,
    RENDERED,
    SECTIONS,
)
from turnstile.operator.model.specs import BaseRef, StoreSpec


@dataclass(frozen=True)
class Owner:
    """The store an ownerReference points at."""

    api_version: str
    kind: str
    name: str
    uid: str

    @property
    def writer(self) -> str:
        return f"{self.kind}/{self.name}"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }


def _json_map(meta: Mapping[str, Any], annotation: str) -> dict[str, Any]:
    raw = (meta.get("annotations") or {}).get(annotation)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _sections(meta: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in _json_map(meta, SECTIONS).items()}


#: The section whose last rendering is recorded (:data:`RENDERED`).
_RECORDED = "lock_store"


def last_rendered(
    configmap: Mapping[str, Any] | None, key: str, section: str
) -> dict[str, Any] | None:
    """The section as Turnstile last rendered it into ``key``: the record if there is one
    (``lock_store``), else what the file holds (a ConfigMap from before the record, or a
    user's own section: adopting Turnstile starts a transition from Rasa's store)."""
    if configmap is None:
        return None
    recorded = _json_map(configmap.get("metadata") or {}, RENDERED).get(f"{key}/{section}")
    if section == _RECORDED and isinstance(recorded, dict):
        return recorded
    return current_section(((configmap.get("data") or {}).get(key)), section)


def recorded_secrets(
    configmap: Mapping[str, Any] | None, key: str
) -> tuple[tuple[str, str, str], ...]:
    """The previous Secrets' env vars of the transition recorded for ``key`` (if any)."""
    if configmap is None:
        return ()
    raw = _json_map(configmap.get("metadata") or {}, RENDERED).get(f"{key}/{_RECORDED}/secrets")
    if not isinstance(raw, list):
        return ()
    return tuple(
        (str(e[0]), str(e[1]), str(e[2])) for e in raw if isinstance(e, list) and len(e) == 3
    )


def _record(
    annotations: dict[str, Any],
    key: str,
    section: str,
    content: Any,
    secrets: Iterable[tuple[str, str, str]] = (),
) -> None:
    if section != _RECORDED:
        return
    records = _json_map({"annotations": annotations}, RENDERED)
    chosen = sorted(list(e) for e in secrets)
    records.pop(f"{key}/{section}/secrets", None)
    if content is None:
        records.pop(f"{key}/{section}", None)
    else:
        records[f"{key}/{section}"] = content
        if chosen:
            records[f"{key}/{section}/secrets"] = chosen
    if records:
        annotations[RENDERED] = json.dumps(dict(sorted(records.items())), sort_keys=True)
    else:
        annotations.pop(RENDERED, None)


def is_owned(configmap: Mapping[str, Any] | None) -> bool:
    """Whether Turnstile created this ConfigMap (and so lets it be garbage-collected)."""
    if configmap is None:
        return True
    annotations = (configmap.get("metadata") or {}).get("annotations") or {}
    return annotations.get(PRE_EXISTING) != "true"


def writer_of(configmap: Mapping[str, Any] | None, key: str, section: str) -> str | None:
    """The store (``Kind/name``) that last wrote ``section`` of ``key``, if recorded."""
    if configmap is None:
        return None
    return _sections(configmap.get("metadata") or {}).get(f"{key}/{section}")


def _owned_in(sections: Mapping[str, str], key: str, but: str | None = None) -> list[str]:
    """The sections of ``key`` a store wrote (per :data:`SECTIONS`), ``but`` left out."""
    found = (claim.split("/", 1) for claim in sections)
    return [s for k, s in found if k == key and s != but]


def base_text(
    base: BaseRef, data: Mapping[str, str] | None, *, namespace: str, composes: str
) -> str:
    """The text of ``base`` in ``data`` (the base ConfigMap's, ``None``: it does not exist),
    or :class:`BaseError` naming the field, the value and what it needs; ``composes``: the
    ConfigMap composed from it, for the message."""
    keeps = f"{composes} is composed from it and stays as it is until"
    if data is None:
        raise BaseError(
            f"spec.configMap.base.name: ConfigMap {namespace}/{base.name} does not exist; "
            f"{keeps} it does"
        )
    if base.key not in data:
        has = ", ".join(sorted(data)) or "no keys"
        raise BaseError(
            f"spec.configMap.base.key: ConfigMap {namespace}/{base.name} has no key "
            f"{base.key!r} (it has {has}); {keeps} it does"
        )
    text = data[base.key]
    problem = endpoints_problem(text)
    if problem is not None:
        raise BaseError(
            f"spec.configMap.base: ConfigMap {namespace}/{base.name} key {base.key} is "
            f"{problem}, not a file Rasa can load; {keeps} it is fixed",
            reason="BaseInvalid",
        )
    return text


def composed(base: str, current: str | None, sections: Iterable[str]) -> str:
    """The key composed from ``base``: its text, with each of ``sections`` as ``current``
    holds it (a section ``current`` lacks, or a ``current`` that does not parse, adds
    nothing: its store writes it again)."""
    text = base
    for name in sections:
        try:
            content = current_section(current, name)
        except EndpointsYamlError:
            content = None
        if content is not None:
            text = merge_section(text, name, content)
    return text


def with_section(
    existing: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    key: str,
    section: str,
    content: Mapping[str, Any],
    owner: Owner,
    secrets: Iterable[tuple[str, str, str]] = (),
    base: str | None = None,
) -> dict[str, Any] | None:
    """The ConfigMap with the store's section written (see the module doc); ``secrets``:
    the previous Secrets' env vars its transition names (recorded with it); ``base``: the
    text the key is composed from, if the stores name one."""
    secrets = tuple(secrets)
    if existing is None:
        text = merge_section(base or "", section, content)
        fresh = {SECTIONS: json.dumps({f"{key}/{section}": owner.writer})}
        _record(fresh, key, section, dict(content), secrets)
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
                "annotations": fresh,
                "ownerReferences": [owner.reference()],
            },
            "data": {key: text},
        }
    body = copy.deepcopy(dict(existing))
    meta = body.setdefault("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE and SECTIONS not in annotations:
        annotations[PRE_EXISTING] = "true"  # first touch of a ConfigMap someone else made
    meta["labels"] = {**labels, **MANAGED_BY}
    sections = _sections(meta)
    sections[f"{key}/{section}"] = owner.writer
    annotations[SECTIONS] = json.dumps(dict(sorted(sections.items())))
    _record(annotations, key, section, dict(content), secrets)
    meta["annotations"] = annotations
    if annotations.get(PRE_EXISTING) != "true":
        refs = list(meta.get("ownerReferences") or [])
        if not any(r.get("uid") == owner.uid for r in refs):
            refs.append(owner.reference())
        meta["ownerReferences"] = refs
    data = dict(body.get("data") or {})
    start = data.get(key)
    if base is not None:
        start = composed(base, start, _owned_in(sections, key, but=section))
    data[key] = merge_section(start, section, content)
    body["data"] = data
    return None if body == existing else body


def without_section(
    existing: Mapping[str, Any] | None,
    *,
    key: str,
    section: str,
    owner: Owner,
    base: str | None = None,
) -> dict[str, Any] | None:
    """The ConfigMap with the store's section removed, if this store wrote it; composed from
    ``base`` (whose own section of that name, if any, then stays), if given."""
    if existing is None:
        return None
    meta = existing.get("metadata") or {}
    sections = _sections(meta)
    claim = f"{key}/{section}"
    if sections.get(claim) not in (None, owner.writer):
        return None  # another store wrote it since; not ours to remove
    if claim not in sections:
        return None  # never written by Turnstile: the user's section stays
    body = copy.deepcopy(dict(existing))
    sections.pop(claim)
    body["metadata"]["annotations"][SECTIONS] = json.dumps(dict(sorted(sections.items())))
    _record(body["metadata"]["annotations"], key, section, None)
    data = dict(body.get("data") or {})
    if base is not None:
        data[key] = composed(base, data.get(key), _owned_in(sections, key))
    elif key in data:
        data[key] = merge_section(data[key], section, None)
    body["data"] = data
    return None if body == existing else body


@dataclass(frozen=True)
class Writer:
    """One store's section as the operator renders it: what the ConfigMap key must hold."""

    key: str
    section: str
    content: Mapping[str, Any] = field(hash=False, compare=False)
    owner: Owner
    #: The store itself: a LockStore's section depends on the file's current one (transition).
    store: StoreSpec | None = field(default=None, hash=False, compare=False)
    #: Password env vars whose Secret changed (``transition.moved_secrets``).
    moved: tuple[tuple[str, str, str], ...] = field(default=(), hash=False, compare=False)

    @property
    def base(self) -> BaseRef | None:
        """The ``spec.configMap.base`` the store names, if any."""
        config_map = self.store.config_map if self.store is not None else None
        return config_map.base if config_map is not None else None

    def decided(
        self, configmap: Mapping[str, Any] | None, now: datetime | None, base: str | None = None
    ) -> tuple[Mapping[str, Any], tuple[tuple[str, str, str], ...]]:
        """What the section must hold in ``configmap`` now (composed from ``base``, if given),
        and the Secrets it records."""
        if self.store is None or now is None:
            return self.content, ()
        content, decision = section_for(
            self.store, configmap, self.key, now, self.moved, base=base
        )
        return content, (decision.secret_env if decision else ())


def section_for(
    store: StoreSpec,
    configmap: Mapping[str, Any] | None,
    key: str,
    now: datetime,
    moved: Iterable[tuple[str, str, str]] = (),
    *,
    base: str | None = None,
) -> tuple[dict[str, Any], Decision | None]:
    """The store's section for ``configmap`` now, decided from what is recorded there (a
    ConfigMap not made yet, with a ``base``: from the base, which the bots may load today)."""
    if configmap is None and base is not None:
        configmap = {"data": {key: base}}
    return decided_section(
        store, last_rendered(configmap, key, store.info.section), now,
        moved=moved, recorded=recorded_secrets(configmap, key),
    )  # fmt: skip


def writers(
    stores: Iterable[tuple[StoreSpec, Owner]],
    moved: Mapping[str, tuple[tuple[str, str, str], ...]] | None = None,
) -> dict[str, list[Writer]]:
    """Per ConfigMap name, the sections the stores write there (as a reconcile writes them).

    Stores being deleted are left out by the caller; two stores of one kind claiming one
    section (``ConfigMapConflict``) write nothing there, so neither is listed. ``moved``, by
    store uid: its password env vars whose Secret changed (``transition.moved_secrets``).
    """
    pairs = list(stores)
    contested = {(where, section) for where, section in conflicts(s for s, _ in pairs)}
    out: dict[str, list[Writer]] = {}
    for store, owner in sorted(pairs, key=lambda p: (p[0].kind, p[0].name)):
        where = target(store)
        if where is None or (where, store.info.section) in contested:
            continue
        content = rendered_section(store)
        its_moved = (moved or {}).get(owner.uid, ())
        out.setdefault(where.name, []).append(
            Writer(where.key, store.info.section, content, owner, store, its_moved)
        )
    return out


def agreed_base(named: Mapping[BaseRef, Iterable[str]], where: object) -> BaseRef | None:
    """The one base the stores writing ``where`` name (``named``: each base with the stores
    naming it; a store naming none follows the others), or :class:`BaseError`
    (``BaseConflict``) when they name different ones: then the key is not composed."""
    if len(named) > 1:
        listed = "; ".join(f"{', '.join(sorted(w))}: {b}" for b, w in sorted(named.items()))
        raise BaseError(
            f"spec.configMap.base: the stores writing {where} name different bases ({listed}); "
            "give them one base (or name it in one store only)",
            reason="BaseConflict",
        )
    return next(iter(named), None)


def base_of(sections: Iterable[Writer], key: str) -> BaseRef | None:
    """The base the writers of ``key`` compose it from (:func:`agreed_base`)."""
    named: dict[BaseRef, list[str]] = {}
    for w in sections:
        if w.key == key and w.base is not None:
            named.setdefault(w.base, []).append(w.owner.writer)
    return agreed_base(named, f"key {key}")


def corrected(
    existing: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    sections: Iterable[Writer],
    now: datetime | None = None,
    bases: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The ConfigMap with every store's section as the store renders it, or ``None`` if it
    already is: a hand edit of a section a store owns is undone, every other byte stays
    (``bases``: per key, the text it is composed from; then every other byte of that key is
    the base's).

    With ``now``, a LockStore's section is decided against the file's current one, as its
    reconcile decides it (a transition starts, stays, or ends the same way in both)."""
    body: Mapping[str, Any] | None = existing
    changed: dict[str, Any] | None = None
    for w in sections:
        base = (bases or {}).get(w.key)
        content, secrets = w.decided(body, now, base)
        new = with_section(
            body, namespace=namespace, name=name, key=w.key, section=w.section,
            content=content, owner=w.owner, secrets=secrets, base=base,
        )  # fmt: skip
        if new is not None:
            body = changed = new
    return changed
