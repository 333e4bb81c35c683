"""Config rollout decisions: which workloads restart, and with what patch.

A bot workload (a Deployment or StatefulSet running Rasa) loads what Turnstile renders: one key
of a ConfigMap (``endpoints.yml`` by default) and the Secrets whose values fill the ``${VAR}``
references in it. It must restart when, and only when, that content changes. The one idea of
this module is that a restart is a *pure function of current state*:

    checksum(workload) = sha256(content of every ConfigMap key its stores render,
                                content hash of every Secret value those stores reference)

The checksum is written into the workload's pod template as :data:`CHECKSUM_ANNOTATION`.
Kubernetes rolls a workload exactly when its pod template changes, so writing the same checksum
again changes nothing: an operator restart, a re-list, a second replica or a burst of events
for one logical change can never roll anything twice. Nothing here remembers what happened
before; everything is recomputed from a :class:`Snapshot` of one namespace.

Everything in this module is pure (no I/O, no clock): :func:`plan_namespace` turns a snapshot
into :class:`WorkloadPlan` s (checksum + the minimal strategic-merge patch, or ``None``), and
:func:`status_patch` into the store's ``status.rollout``. The thin Kubernetes I/O lives in
:mod:`turnstile.operator.kube.client`; the kopf wiring and the debounce in
:mod:`turnstile.operator.handlers.rollout`.

Errors: a ``spec.rollout`` the CRD schema should have refused raises
:class:`~turnstile.operator.model.errors.SpecError` naming the field, the value and what is
accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypedDict, cast

from turnstile.operator.decide.render import endpoints_problem, without_transition
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import (
    APPLIED_AT_ANNOTATION,
    CHECKSUM_ANNOTATION,
    INJECTED_ENV_ANNOTATION,
    KINDS,
    STORE_KINDS,
    WORKLOAD_KINDS,
)
from turnstile.operator.model.specs import (
    RULES,
    check_label_key,
    check_label_value,
    configmap_key,
)
from turnstile.stores.fingerprint import EXPECT_ENV, STORES_FILE_ENV, file_fingerprint

__all__ = [
    "APPLIED_AT_ANNOTATION",
    "CHECKSUM_ANNOTATION",
    "INJECTED_ENV_ANNOTATION",
    "MIXED_FILES",
    "STORE_KINDS",
    "WORKLOAD_KINDS",
    "EnvFromSecret",
    "EnvSource",
    "EnvValue",
    "LabelSelector",
    "Requirement",
    "SecretRef",
    "Snapshot",
    "StatusEntry",
    "StoreRollout",
    "Workload",
    "WorkloadPlan",
    "WorkloadRef",
    "checksum",
    "invalid_store",
    "plan_namespace",
    "referenced_secrets",
    "status_entries",
    "status_patch",
    "store_rollout",
    "workload_patch",
]

#: Bumped if the checksum's input encoding ever changes (that change would roll everything once).
_CHECKSUM_VERSION: Final = "turnstile-rollout/v1"
_OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


# ------------------------------------------------------------------------------ store side


@dataclass(frozen=True, order=True)
class WorkloadRef:
    """A workload by kind and name, in the store's namespace."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (``matchLabels`` AND every ``matchExpressions`` entry).

    Unlike Kubernetes, an empty selector selects *nothing*: a defaulted ``selector: {}`` must
    never restart every workload in the namespace.
    """

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.empty:
            return False
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True, order=True)
class SecretRef:
    """A Secret a store references; ``key=None`` means the whole Secret (e.g. TLS material)."""

    name: str
    key: str | None = None


@dataclass(frozen=True, order=True)
class EnvFromSecret:
    """An env var that fills a ``${VAR}`` reference in the rendered config."""

    env_name: str
    secret_name: str
    secret_key: str
    #: ``optional: true``: a transition's previous password (the pod still starts once that
    #: Secret is gone; by then the file no longer names the variable).
    optional: bool = False

    def entry(self) -> dict[str, Any]:
        """The container ``env`` entry."""
        ref: dict[str, Any] = {"name": self.secret_name, "key": self.secret_key}
        if self.optional:
            ref["optional"] = True
        return {"name": self.env_name, "valueFrom": {"secretKeyRef": ref}}


@dataclass(frozen=True, order=True)
class EnvValue:
    """A plain env var a store needs that has no ``endpoints.yml`` key (``render.plain_env``)."""

    env_name: str
    value: str

    def entry(self) -> dict[str, Any]:
        """The container ``env`` entry."""
        return {"name": self.env_name, "value": self.value}


EnvSource = EnvFromSecret | EnvValue


def _env_order(e: EnvSource) -> tuple[str, str]:
    return (e.env_name, repr(e))


@dataclass(frozen=True)
class StoreRollout:
    """What rollout needs to know about one LockStore/TimerStore."""

    kind: str
    name: str
    #: ``None`` when the store renders into no ConfigMap; only its Secrets then count.
    config_map: str | None
    config_key: str
    workloads: tuple[WorkloadRef, ...] = ()
    selector: LabelSelector | None = None
    inject_env: bool = False
    #: What a bot pod's env must hold: Secret references, then plain values.
    env: tuple[EnvSource, ...] = ()
    secrets: tuple[SecretRef, ...] = ()
    #: Why the store's spec cannot be read (:func:`invalid_store`); ``None`` when it can.
    invalid: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def selects(self, workload: Workload) -> bool:
        """True if this store targets ``workload`` by name or by selector."""
        if workload.ref in self.workloads:
            return True
        return self.selector is not None and self.selector.matches(workload.labels)


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "an object", value)
    return cast(Mapping[str, Any], value)


def _sequence(value: Any, path: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SpecError(path, "a list", value)
    return cast(Sequence[Any], value)


def _selector(raw: Mapping[str, Any], path: str) -> LabelSelector:
    labels = _mapping(raw.get("matchLabels"), f"{path}.matchLabels")
    for key, value in labels.items():
        check_label_key(f"{path}.matchLabels", key)
        if not isinstance(value, str):
            raise SpecError(f"{path}.matchLabels.{key}", "a string", value)
        check_label_value(f"{path}.matchLabels.{key}", value)
    requirements = []
    for i, item in enumerate(_sequence(raw.get("matchExpressions"), f"{path}.matchExpressions")):
        where = f"{path}.matchExpressions[{i}]"
        expr = _mapping(item, where)
        label_key, op = expr.get("key"), expr.get("operator")
        values = _sequence(expr.get("values"), f"{where}.values")
        if not isinstance(label_key, str) or not label_key:
            raise SpecError(f"{where}.key", RULES["selector_key"], label_key)
        check_label_key(f"{where}.key", label_key)
        for j, item_value in enumerate(values):
            check_label_value(f"{where}.values[{j}]", item_value)
        if op not in _OPERATORS:
            raise SpecError(f"{where}.operator", f"one of {sorted(_OPERATORS)}", op)
        if op in ("In", "NotIn") and not values:
            raise SpecError(f"{where}.values", RULES["selector_values"], list(values))
        if op in ("Exists", "DoesNotExist") and values:
            raise SpecError(f"{where}.values", RULES["selector_no_values"], list(values))
        requirements.append(Requirement(label_key, op, frozenset(str(v) for v in values)))
    return LabelSelector(tuple(sorted(labels.items())), tuple(requirements))


def referenced_secrets(spec: Mapping[str, Any]) -> tuple[SecretRef, ...]:
    """Every Secret a store spec references, found structurally.

    Any object under ``spec`` whose key ends in ``SecretRef`` (``passwordSecretRef``,
    ``caSecretRef``...) is ``{name, key?}``; any ``secretName`` string names a whole Secret.
    Walking the spec instead of listing fields keeps new TLS fields covered without an edit here.
    """
    found: set[SecretRef] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "rollout":
                    continue
                if key.endswith("SecretRef") and isinstance(value, Mapping):
                    name, skey = value.get("name"), value.get("key")
                    if isinstance(name, str) and name:
                        found.add(SecretRef(name, skey if isinstance(skey, str) else None))
                elif key == "secretName" and isinstance(value, str) and value:
                    found.add(SecretRef(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return tuple(sorted(found, key=lambda r: (r.name, r.key or "")))


def store_rollout(
    body: Mapping[str, Any],
    env: Iterable[tuple[str, str, str]] = (),
    *,
    files: Iterable[tuple[str, str, str]] = (),
    values: Iterable[tuple[str, str]] = (),
) -> StoreRollout:
    """Read a store object; one without ``spec.rollout`` selects no workload itself, but still
    counts for the workloads that load the file it renders into.

    The renderer says what a bot needs besides the file: ``env`` is ``render.secret_env``
    (``(env_name, secret_name, secret_key)`` filling the ``${VAR}`` references), ``files`` is
    ``render.secret_files`` (``(path, secret_name, secret_key)`` of TLS material) and
    ``values`` is ``render.plain_env`` (``(env_name, value)``).
    """
    meta = _mapping(body.get("metadata"), "metadata")
    spec = _mapping(body.get("spec"), "spec")
    rollout = _mapping(spec.get("rollout") or {}, "spec.rollout")
    cm = _mapping(spec.get("configMap"), "spec.configMap")
    cm_name = cm.get("name")
    if cm_name is not None and (not isinstance(cm_name, str) or not cm_name):
        raise SpecError("spec.configMap.name", "the name of a ConfigMap", cm_name)
    refs = []
    for i, item in enumerate(_sequence(rollout.get("workloads"), "spec.rollout.workloads")):
        w = _mapping(item, f"spec.rollout.workloads[{i}]")
        kind, name = w.get("kind"), w.get("name")
        if kind not in WORKLOAD_KINDS:
            raise SpecError(
                f"spec.rollout.workloads[{i}].kind", '"Deployment" or "StatefulSet"', kind
            )
        if not isinstance(name, str) or not name:
            raise SpecError(f"spec.rollout.workloads[{i}].name", "a workload name", name)
        refs.append(WorkloadRef(kind, name))
    raw_selector = rollout.get("selector")
    selector = (
        None
        if raw_selector is None
        else _selector(_mapping(raw_selector, "spec.rollout.selector"), "spec.rollout.selector")
    )
    inject = rollout.get("injectEnv", False)
    if not isinstance(inject, bool):
        raise SpecError("spec.rollout.injectEnv", "true or false", inject)
    from_secrets = sorted({EnvFromSecret(*triple) for triple in env})
    plain = sorted({EnvValue(*pair) for pair in values})
    env_entries: tuple[EnvSource, ...] = (*from_secrets, *plain)
    secrets = {SecretRef(e.secret_name, e.secret_key) for e in from_secrets}
    secrets.update(SecretRef(name, key) for _, name, key in files)
    if not secrets:
        secrets.update(referenced_secrets(spec))
    return StoreRollout(
        kind=str(body.get("kind", "")),
        name=str(meta.get("name", "")),
        config_map=cm_name,
        config_key=configmap_key(cm),
        workloads=tuple(sorted(set(refs))),
        selector=selector,
        inject_env=inject,
        env=env_entries,
        secrets=tuple(sorted(secrets, key=lambda r: (r.name, r.key or ""))),
    )


def invalid_store(body: Mapping[str, Any], problem: str) -> StoreRollout:
    """A store whose spec cannot be read, kept so that only *its* rollouts stop.

    What can still be read leniently (its ConfigMap key, the workloads it names) says which
    workloads it could touch: those are held on what they run (:func:`plan_namespace`), every
    other workload of the namespace keeps rolling. Dropping the store instead would change the
    checksum of the workloads loading its file, and roll them onto a guess.
    """
    def part(node: Any, key: str) -> Mapping[str, Any]:
        value = node.get(key) if isinstance(node, Mapping) else None
        return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}

    meta, spec = part(body, "metadata"), part(body, "spec")
    cm, rollout = part(spec, "configMap"), part(spec, "rollout")
    raw_named = rollout.get("workloads")
    named: list[Any] = raw_named if isinstance(raw_named, list) else []
    refs = {
        WorkloadRef(w["kind"], w["name"])
        for w in named
        if isinstance(w, Mapping) and w.get("kind") in WORKLOAD_KINDS
        and isinstance(w.get("name"), str) and w.get("name")
    }  # fmt: skip
    name = cm.get("name")
    return StoreRollout(
        kind=str(body.get("kind", "")),
        name=str(meta.get("name", "")),
        config_map=name if isinstance(name, str) and name else None,
        config_key=configmap_key(cm),
        workloads=tuple(sorted(refs)),
        invalid=problem,
    )


# --------------------------------------------------------------------------- workload side


class EnvVar(TypedDict, total=False):
    name: str
    value: str
    valueFrom: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """The parts of a Deployment/StatefulSet that rollout reads."""

    kind: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    template_annotations: Mapping[str, str]
    containers: tuple[tuple[str, tuple[EnvVar, ...]], ...]
    uid: str = ""
    deleting: bool = False

    @property
    def ref(self) -> WorkloadRef:
        return WorkloadRef(self.kind, self.name)

    @property
    def checksum(self) -> str | None:
        return self.template_annotations.get(CHECKSUM_ANNOTATION)

    @classmethod
    def from_body(cls, kind: str, body: Mapping[str, Any]) -> Workload:
        """Read a raw API object (JSON field names)."""
        meta = body.get("metadata") or {}
        template = (body.get("spec") or {}).get("template") or {}
        containers = tuple(
            (str(c.get("name", "")), tuple(cast(list[EnvVar], c.get("env") or [])))
            for c in (template.get("spec") or {}).get("containers") or []
        )
        return cls(
            kind=kind,
            name=str(meta.get("name", "")),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            template_annotations=dict((template.get("metadata") or {}).get("annotations") or {}),
            containers=containers,
            uid=str(meta.get("uid", "")),
            deleting=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything rollout reads in one namespace, at one moment.

    ``config_maps`` maps a ConfigMap name to its ``data``; ``secrets`` maps a Secret name to
    its ``data`` (base64 strings, never decoded: only hashed). A name missing from either
    mapping means the object does not exist. ``unmarked`` names Secrets that exist but are not
    labelled for stores (``turnstile.dev/store-secret=true``): no workload that loads a store
    referencing one is touched (no checksum, no env injected) until it is.
    """

    stores: tuple[StoreRollout, ...]
    workloads: tuple[Workload, ...]
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unmarked: frozenset[str] = frozenset()
    #: ``(config_map, key)`` -> the previous Secrets' env vars a LockStore's transition names
    #: there (``(env, secret, key)``): injected like the store's own, never in the checksum,
    #: so a transition's end rolls nothing.
    transition_env: Mapping[tuple[str, str], tuple[tuple[str, str, str], ...]] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class WorkloadPlan:
    """The decision for one workload: its checksum, and the patch (``None``: already there)."""

    workload: Workload
    stores: tuple[StoreRollout, ...]
    checksum: str
    patch: dict[str, Any] | None
    #: Why the workload is kept on what it runs (a file it loads does not parse), else ``None``.
    held: str | None = None
    #: The Event reason that says so (``None``: the file's, ``EndpointsUnparseable``).
    held_reason: str | None = None

    @property
    def new_checksum(self) -> bool:
        """True if the checksum in the pod template changes (a rollout for a new config)."""
        return self.workload.checksum != self.checksum

    @property
    def rolls(self) -> bool:
        """True if the patch changes the pod template, i.e. Kubernetes will roll."""
        return self.patch is not None and "template" in self.patch.get("spec", {})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def checksum(
    config: Iterable[tuple[str, str, str | None]],
    secrets: Iterable[tuple[str, str | None, str | None]],
    values: Iterable[tuple[str, str]] = (),
) -> str:
    """The checksum of what a workload loads.

    ``config``: ``(config_map, key, content)``; ``secrets``: ``(secret, key, content_digest)``,
    ``None`` where the object or key is absent; ``values``: plain ``(env_name, value)`` a store
    needs outside the file. Order and duplicates do not matter.
    """
    canonical: dict[str, Any] = {
        "v": _CHECKSUM_VERSION,
        "config": sorted(
            {(cm, key, None if c is None else _digest(c)) for cm, key, c in config}, key=repr
        ),
        "secrets": sorted(set(secrets), key=repr),
    }
    plain = sorted(set(values))
    if plain:  # absent rather than empty, so checksums without plain values never moved
        canonical["values"] = plain
    return "sha256:" + _digest(json.dumps(canonical, sort_keys=True, separators=(",", ":")))


def _secret_digest(ref: SecretRef, secrets: Mapping[str, Mapping[str, str]]) -> str | None:
    data = secrets.get(ref.name)
    if data is None:
        return None
    if ref.key is not None:
        value = data.get(ref.key)
        return None if value is None else _digest(value)
    return _digest(json.dumps(sorted(data.items()), separators=(",", ":")))


def _injected_names(workload: Workload) -> frozenset[str]:
    raw = workload.annotations.get(INJECTED_ENV_ANNOTATION, "")
    return frozenset(n for n in raw.split(",") if n)


def workload_patch(
    workload: Workload, digest: str, env: Sequence[EnvSource], now: str
) -> dict[str, Any] | None:
    """The minimal strategic-merge patch bringing ``workload`` to ``digest`` and ``env``.

    ``None`` when nothing differs. An env entry the user wrote (same name, not recorded in
    :data:`INJECTED_ENV_ANNOTATION`) is left exactly as it is; entries Turnstile injected earlier
    are updated if their Secret reference changed. Containers are merged by name, so containers
    and env entries the patch does not mention are untouched.
    """
    owned = _injected_names(workload)
    containers = []
    injected = set(owned)
    for cname, current in workload.containers:
        by_name = {e.get("name"): e for e in current}
        changes = []
        for want in env:
            entry = want.entry()
            have = by_name.get(want.env_name)
            if have is None or (want.env_name in owned and dict(have) != entry):
                changes.append(entry)
                injected.add(want.env_name)
        if changes:
            containers.append({"name": cname, "env": changes})

    template: dict[str, Any] = {}
    if workload.checksum != digest:
        template["metadata"] = {"annotations": {CHECKSUM_ANNOTATION: digest}}
    if containers:
        template["spec"] = {"containers": containers}
    annotations: dict[str, str] = {}
    if template.get("metadata") or APPLIED_AT_ANNOTATION not in workload.annotations:
        annotations[APPLIED_AT_ANNOTATION] = now
    if injected != owned:
        annotations[INJECTED_ENV_ANNOTATION] = ",".join(sorted(injected))
    if not template and not annotations:
        return None
    patch: dict[str, Any] = {}
    if annotations:
        patch["metadata"] = {"annotations": annotations}
    if template:
        patch["spec"] = {"template": template}
    return patch


def plan_namespace(snapshot: Snapshot, now: str) -> list[WorkloadPlan]:
    """Decide every selected workload's checksum and patch, from current state only.

    A workload is skipped (no plan) while it is being deleted, or while any store selecting it
    has not rendered its ConfigMap key yet: rolling on half-rendered state would only roll
    again a moment later. Nor is it touched while one of its stores references a Secret not
    marked for stores (``snapshot.unmarked``): the operator never injects or hashes such a
    Secret. Unselected workloads are never touched.
    """
    plans = []
    for workload in sorted(snapshot.workloads, key=lambda w: w.ref):
        if workload.deleting:
            continue
        selecting = [s for s in snapshot.stores if s.invalid is None and s.selects(workload)]
        if not selecting:
            continue
        # The workload loads whole files, so every store rendering into a file it loads counts
        # (its Secrets and its ${VAR}s), whether or not that store names the workload itself.
        files = {(s.config_map, s.config_key) for s in selecting if s.config_map is not None}
        stores = tuple(
            sorted(
                {s.ref: s for s in (*selecting, *(
                    s for s in snapshot.stores if (s.config_map, s.config_key) in files
                ))}.values(),
                key=lambda s: s.ref,
            )
        )
        config = []
        for config_map, config_key in sorted(f for f in files if f[0] is not None):
            data = snapshot.config_maps.get(config_map)
            content = None if data is None else data.get(config_key)
            config.append((config_map, config_key, content))
        # A transition's keys roll nothing themselves: the change that starts one changes the
        # section too, and their removal after transition_until must not roll the bots again.
        hashed = [(cm, key, c if c is None else without_transition(c)) for cm, key, c in config]
        if any(content is None for _, _, content in config):
            continue
        held = _invalid(workload, files, snapshot.stores) or _unparseable(config)
        mixed = _mixed_files(stores)
        if held is not None or mixed is not None:
            current = workload.checksum or ""
            plans.append(WorkloadPlan(workload, stores, current, None, held=held or mixed,
                                      held_reason=None if held else MIXED_FILES))  # fmt: skip
            continue
        secret_refs = {ref for store in stores for ref in store.secrets}
        if any(ref.name in snapshot.unmarked for ref in secret_refs):
            continue
        stores = _pinned_to_files(stores, {(cm, key): c for cm, key, c in config})
        digest = checksum(
            hashed,
            ((r.name, r.key, _secret_digest(r, snapshot.secrets)) for r in secret_refs),
            ((e.env_name, e.value) for s in stores for e in s.env if isinstance(e, EnvValue)),
        )
        inject = any(s.inject_env for s in selecting)
        previous = (
            EnvFromSecret(*triple, optional=True)
            for where in sorted(files) for triple in snapshot.transition_env.get(where, ())
        )  # fmt: skip
        env = _first_per_name((*(e for s in stores for e in s.env), *previous)) if inject else []
        plans.append(
            WorkloadPlan(workload, stores, digest, workload_patch(workload, digest, env, now))
        )
    return plans


def _pinned_to_files(
    stores: tuple[StoreRollout, ...], files: Mapping[tuple[str, str], str | None]
) -> tuple[StoreRollout, ...]:
    """The stores with their section fingerprints (``TURNSTILE_EXPECT_*``) taken from the files
    as they are, not from their specs: what a new pod will find is what it must expect. The
    two differ while a store's change is held back (a lock-affecting change during an earlier
    transition keeps the file as it is until ``transition_until``): pinning the spec's section
    then rolled the bots onto pods that refused the file they got until the transition ended.
    """
    out = []
    for store in stores:
        info = KINDS.get(store.kind)
        pin_env = EXPECT_ENV.get(info.section) if info is not None else None
        found = None
        if info is not None and pin_env is not None and store.config_map is not None:
            content = files.get((store.config_map, store.config_key))
            found = file_fingerprint(content, info.section)
        if found is None:
            out.append(store)
            continue
        env = tuple(
            EnvValue(e.env_name, found)
            if isinstance(e, EnvValue) and e.env_name == pin_env else e
            for e in store.env
        )  # fmt: skip
        out.append(replace(store, env=env))
    return tuple(out)


def _invalid(
    workload: Workload, files: set[tuple[str, str]], stores: Iterable[StoreRollout]
) -> str | None:
    """Why a store that could touch ``workload`` stops its rollout (its spec is invalid)."""
    broken = [
        s for s in stores
        if s.invalid is not None
        and (workload.ref in s.workloads or (s.config_map, s.config_key) in files)
    ]  # fmt: skip
    if not broken:
        return None
    why = "; ".join(f"{s.ref}: {s.invalid}" for s in broken)
    return f"not rolling until this store's spec is fixed: {why}"


#: The Event reason of a workload held because its stores render into different files.
MIXED_FILES: Final = "MixedStoreFiles"


def _stores_file(store: StoreRollout) -> str:
    """The file a store's sections are for: ``integrations`` (an engine project's
    ``integrations.yml``, ``spec.configMap.format: integrations``) or ``endpoints``."""
    for e in store.env:
        if isinstance(e, EnvValue) and e.env_name == STORES_FILE_ENV:
            return e.value
    return "endpoints"


def _mixed_files(stores: Iterable[StoreRollout]) -> str | None:
    """Why a workload must not roll onto stores written for different files: Rasa reads its
    stores from one (``integrations.yml`` in an engine project, which then decides alone,
    else ``endpoints.yml``), so a pod would start without the others' sections. The pods the
    workload runs keep running; rolling them would only give pods the launcher refuses."""
    by_file: dict[str, list[str]] = {}
    for store in stores:
        if store.config_map is not None:
            by_file.setdefault(_stores_file(store), []).append(store.ref)
    if len(by_file) < 2:
        return None
    said = "; ".join(f"{', '.join(refs)}: {fmt}" for fmt, refs in sorted(by_file.items()))
    return (
        f"not rolling: its stores are written for different files ({said}); Rasa reads its "
        "stores from one file, so give every store this workload loads the same "
        "spec.configMap.format"
    )


def _unparseable(config: Iterable[tuple[str, str, str | None]]) -> str | None:
    """Why a workload must not roll onto these files (one that a bot could not load)."""
    problems = [
        f"{cm}/{key} is {problem}"
        for cm, key, content in config
        if (problem := endpoints_problem(content)) is not None
    ]
    if not problems:
        return None
    return (
        f"not rolling: ConfigMap {'; '.join(problems)} (Rasa needs a YAML mapping of "
        "sections); the bots keep the configuration they run until the file is fixed"
    )


def _first_per_name(env: Iterable[EnvSource]) -> list[EnvSource]:
    # Two stores mapping one env name to different sources: the first (sorted) wins, so the
    # outcome is deterministic and never flaps between syncs.
    chosen: dict[str, EnvSource] = {}
    for e in sorted(set(env), key=_env_order):
        chosen.setdefault(e.env_name, e)
    return sorted(chosen.values(), key=_env_order)


# ------------------------------------------------------------------------------------ status


class StatusEntry(TypedDict, total=False):
    kind: str
    name: str
    checksum: str
    appliedAt: str
    #: Why this workload cannot use the store fully (a bot running plain ``rasa`` with
    #: Turnstile's timer store: ``turnstile.operator.decide.launcher``).
    note: str
    #: Why this workload is kept on its current configuration (``WorkloadPlan.held``).
    held: str


def status_entries(
    store: StoreRollout,
    plans: Iterable[WorkloadPlan],
    now: str,
    notes: Mapping[str, str] | None = None,
) -> list[StatusEntry]:
    """``status.rollout.workloads`` for one store: every workload it selects that has a plan;
    ``notes`` by workload ref (``Kind/name``) are set on TimerStores' entries."""
    entries = []
    for plan in plans:
        if store.ref not in {s.ref for s in plan.stores}:
            continue
        entry = StatusEntry(kind=plan.workload.kind, name=plan.workload.name)
        if plan.checksum:
            entry["checksum"] = plan.checksum
        if plan.held is not None:
            entry["held"] = plan.held
        applied = (
            now if plan.new_checksum else plan.workload.annotations.get(APPLIED_AT_ANNOTATION, now)
        )
        entry["appliedAt"] = applied
        note = (notes or {}).get(str(plan.workload.ref))
        if note is not None and store.kind == "TimerStore":
            entry["note"] = note
        entries.append(entry)
    return sorted(entries, key=lambda e: (e["kind"], e["name"]))


def status_patch(
    current_status: Mapping[str, Any] | None, entries: list[StatusEntry]
) -> dict[str, Any] | None:
    """A merge patch setting ``status.rollout.workloads``, or ``None`` if already so.

    Only ``status.rollout`` is named, so a JSON merge patch leaves ``status.conditions`` and
    everything else in the status alone.
    """
    rollout = (current_status or {}).get("rollout")
    current = (rollout or {}).get("workloads") or []
    if not entries:  # nothing loads this store's file (any more): no status.rollout at all
        return None if rollout is None else {"status": {"rollout": None}}
    if current == entries:
        return None
    return {"status": {"rollout": {"workloads": entries}}}
