"""The names the operator and the cluster agree on, defined once.

The API group and version, the two store kinds (:data:`KINDS`: plural, ``endpoints.yml``
section, the class a bot loads, the password env var, the TLS mount), the workload kinds that
rollout patches, and the labels, annotations and finalizer the operator writes. Pure data: the
CRD generator (:mod:`~turnstile.operator.model.crds`), the spec parser, the decisions and the
Kubernetes client all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

GROUP: Final = "turnstile.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
#: The finalizer the operator puts on every store it serves.
FINALIZER: Final = "turnstile.dev/finalizer"
CATEGORY: Final = "turnstile"

@dataclass(frozen=True)
class KindInfo:
    """Everything that differs between the two kinds."""

    kind: str
    plural: str
    singular: str
    short_name: str
    #: The top-level key of ``endpoints.yml`` this kind renders.
    section: str
    #: ``type:`` for ``implementation: turnstile`` and ``implementation: rasa``.
    turnstile_type: str
    rasa_type: str
    #: The env var a bot pod must set from the password Secret.
    password_env: str
    #: The env var a bot pod must set from the sentinels' password Secret (sentinel mode).
    sentinel_password_env: str
    #: Where a bot pod mounts the TLS Secrets (``ca.crt``, ``tls.crt``, ``tls.key``).
    tls_dir: str


LOCK_STORE: Final = KindInfo(
    kind="LockStore",
    plural="lockstores",
    singular="lockstore",
    short_name="lks",
    section="lock_store",
    turnstile_type="turnstile.rasa.TicketLockStore",
    rasa_type="concurrent_redis",
    password_env="TURNSTILE_LOCK_STORE_PASSWORD",
    sentinel_password_env="TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD",
    tls_dir="/etc/turnstile/lock_store",
)
TIMER_STORE: Final = KindInfo(
    kind="TimerStore",
    plural="timerstores",
    singular="timerstore",
    short_name="tms",
    section="timer_store",
    turnstile_type="turnstile.rasa.TimerStore",
    rasa_type="redis",
    password_env="TURNSTILE_TIMER_STORE_PASSWORD",
    sentinel_password_env="TURNSTILE_TIMER_STORE_SENTINEL_PASSWORD",
    tls_dir="/etc/turnstile/timer_store",
)
KINDS: Final[dict[str, KindInfo]] = {LOCK_STORE.kind: LOCK_STORE, TIMER_STORE.kind: TIMER_STORE}

#: Store kind -> plural, as the CRDs define them.
STORE_PLURALS: Final = {info.kind: info.plural for info in KINDS.values()}
STORE_KINDS: Final = tuple(KINDS)

WorkloadKind = Literal["Deployment", "StatefulSet"]
#: The workloads rollout patches, and their ``apps/v1`` plurals.
WORKLOAD_KINDS: Final[tuple[WorkloadKind, ...]] = ("Deployment", "StatefulSet")
WORKLOAD_PLURALS: Final = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
WORKLOAD_API_VERSION: Final = "apps/v1"

#: The label every object the operator creates carries.
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "turnstile"
MANAGED_BY: Final = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
#: The Event source component and the reporting controller.
COMPONENT: Final = "turnstile-operator"
REPORTING_COMPONENT: Final = f"{GROUP}/operator"

#: ConfigMap annotations: the ConfigMap existed before the operator wrote to it; the sections
#: the operator wrote into it.
PRE_EXISTING: Final = "turnstile.dev/pre-existing"
SECTIONS: Final = "turnstile.dev/sections"
#: ConfigMap annotation: JSON map ``<key>/lock_store`` -> the section as last rendered (no
#: secrets: passwords are ``${VAR}``). A LockStore's transition starts from this, not from
#: the file, so a hand edit of the file is put back rather than taken for what pods run.
RENDERED: Final = "turnstile.dev/rendered-lock-store"
#: The label a Secret needs before a store may read it.
OPT_IN_LABEL: Final = "turnstile.dev/store-secret"
OPT_IN_VALUE: Final = "true"
#: Pod-template annotation holding the checksum; changing it is what rolls the workload.
CHECKSUM_ANNOTATION: Final = "turnstile.dev/config-checksum"
#: Workload (not template) annotation: when the current checksum was written. Never rolls.
APPLIED_AT_ANNOTATION: Final = "turnstile.dev/config-applied-at"
#: Workload (not template) annotation: env names Turnstile injected, so it may update them
#: later without ever touching an entry the user wrote.
INJECTED_ENV_ANNOTATION: Final = "turnstile.dev/injected-env"
