"""Secret material a store needs, resolved from Secret data, and kept out of every text.

A store names Secrets (``spec.redis.passwordSecretRef``,
``spec.redis.sentinel.passwordSecretRef``, ``spec.redis.tls.caSecretRef``,
``spec.redis.tls.clientCertSecretRef``); the operator reads them only to probe Redis itself.
They never reach the ConfigMap (the rendered section holds ``${VAR}`` references and file
paths, see :mod:`turnstile.operator.decide.render`), the status, an Event or a log line.

:func:`resolve` is pure: the thin Kubernetes layer hands it the data of the Secrets it could
read (``None`` for one that does not exist) and gets back :class:`Credentials` or a
:class:`~turnstile.operator.model.errors.SecretError` that names the Secret and key, never a value.
:func:`redact` is the second line of defence for text that comes back from Redis.

A Secret is used only if it is meant for stores: it carries the label
``turnstile.dev/store-secret: "true"`` (:data:`OPT_IN_LABEL`). Admission already refuses a
store whose author cannot read the Secrets it names; the label is the second lock, set by
whoever may write the Secret, so a store can never make the operator read a database
password, a token or any other Secret that was not put there for it.
:func:`refuse_unmarked` decides it before anything is decoded or any connection is made.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from turnstile.operator.model.errors import SecretError, SecretNotOptedInError, SecretValueError
from turnstile.operator.model.kinds import OPT_IN_LABEL, OPT_IN_VALUE
from turnstile.operator.model.specs import SecretKeyRef, StoreSpec

#: Keys of a ``kubernetes.io/tls`` Secret, as cert-manager writes them.
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
REDACTED = "<redacted>"
#: The label that marks a Secret as meant for Turnstile stores, and its one accepted value.

SecretData = Mapping[str, str]
"""A Secret's ``data``: key to base64 text, exactly as the API returns it."""


@dataclass(frozen=True)
class SecretObject:
    """The parts of a Secret the operator looks at: its labels and its data."""

    labels: Mapping[str, str]
    data: SecretData = field(repr=False)

    @property
    def opted_in(self) -> bool:
        return self.labels.get(OPT_IN_LABEL) == OPT_IN_VALUE

    @classmethod
    def from_body(cls, body: Mapping[str, object]) -> SecretObject:
        meta = body.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        data = body.get("data")
        return cls(
            labels={str(k): str(v) for k, v in (labels or {}).items()},
            data={str(k): str(v) for k, v in (data or {}).items()}
            if isinstance(data, Mapping)
            else {},
        )


@dataclass(frozen=True)
class Credentials:
    """What the operator needs to connect as a bot would; ``repr`` shows no value."""

    password: str | None = field(default=None, repr=False)
    #: The sentinels' own password (``spec.redis.sentinel.passwordSecretRef``).
    sentinel_password: str | None = field(default=None, repr=False)
    ca_pem: bytes | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)

    def values(self) -> list[str]:
        """Every secret value as text, for :func:`redact`."""
        found = [v for v in (self.password, self.sentinel_password) if v]
        # A value with a trailing newline is still redacted where it appears without it.
        found += [v.strip() for v in found if v.strip() and v.strip() != v]
        for blob in (self.key_pem,):
            if blob:
                found.append(blob.decode(errors="replace").strip())
        return found


def secret_fields(spec: StoreSpec) -> list[tuple[str, str]]:
    """``(field, Secret name)`` for every Secret reference the store uses, in spec order."""
    tls = spec.redis.tls
    sentinel = spec.redis.sentinel.password
    found = [
        ("spec.redis.passwordSecretRef", spec.redis.password.name if spec.redis.password else None),
        ("spec.redis.sentinel.passwordSecretRef", sentinel.name if sentinel else None),
        ("spec.redis.tls.caSecretRef", tls.ca.name if tls.enabled and tls.ca else None),
        ("spec.redis.tls.clientCertSecretRef", tls.client_cert_secret if tls.enabled else None),
    ]
    return [(where, name) for where, name in found if name]


def secret_names(spec: StoreSpec) -> list[str]:
    """The Secrets a store refers to, in a stable order, without duplicates."""
    names: list[str] = []
    for _, name in secret_fields(spec):
        if name not in names:
            names.append(name)
    return names


def refuse_unmarked(spec: StoreSpec, secrets: Mapping[str, SecretObject | None]) -> None:
    """Raise :class:`SecretNotOptedInError` for the first existing Secret without the label.

    A Secret that does not exist is left to :func:`resolve` (``SecretNotFound``).
    """
    for where, name in secret_fields(spec):
        secret = secrets.get(name)
        if secret is not None and not secret.opted_in:
            raise SecretNotOptedInError(
                f"Secret {name!r} ({where}) is not labelled {OPT_IN_LABEL}={OPT_IN_VALUE}: the "
                f"operator uses only Secrets meant for stores; if it is, run `kubectl label "
                f"secret {name} {OPT_IN_LABEL}={OPT_IN_VALUE}` in the store's namespace"
            )


def _value(
    secrets: Mapping[str, SecretData | None], ref: SecretKeyRef, *, what: str
) -> bytes:
    data = secrets.get(ref.name)
    if data is None:
        raise SecretError(f"Secret {ref.name!r} ({what}) does not exist in the store's namespace")
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise SecretError(
            f"Secret {ref.name!r} ({what}) has no key {ref.key!r} (it has: {keys})",
            missing_key=True,
        )
    try:
        return base64.b64decode(data[ref.key], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(
            f"Secret {ref.name!r} key {ref.key!r} ({what}) is not valid base64", missing_key=True
        ) from None


def _password(
    secrets: Mapping[str, SecretData | None], ref: SecretKeyRef, *, what: str, env: str
) -> str:
    """The password exactly as a bot pod gets it: the Secret's bytes, nothing stripped.

    A pod's env var from a Secret holds every byte, a trailing newline too, and Rasa puts it
    into ``${VAR}`` as is; probing with anything else could pass where the bots fail.
    """
    raw = _value(secrets, ref, what=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretValueError(
            f"Secret {ref.name!r} key {ref.key!r} ({what}) is not UTF-8 text: a bot gets it "
            f"through the env var {env}, and Redis clients send passwords as UTF-8"
        ) from None
    if breaks_rasa_expansion(text, env):
        raise SecretValueError(
            f"Secret {ref.name!r} key {ref.key!r} ({what}): Rasa cannot load this password "
            f"through ${{{env}}}: its endpoints.yml loader refuses a value in which a word "
            f"(split at whitespace) starts with '$' and is part of the reference itself, "
            f"such as a lone '$' or '${{'; bots would fail at start. Change the password"
        )
    return text


def breaks_rasa_expansion(value: str, env: str) -> bool:
    """Whether Rasa's ``${VAR}`` expansion refuses ``value`` put into ``${env}``.

    Rasa (3.6 and Pro 3.x, ``env_var_constructor``) expands the scalar with
    ``os.path.expandvars`` and raises when a whitespace-separated word of the result starts
    with ``$`` and occurs in the unexpanded text.
    """
    reference = "${" + env + "}"
    return any(word.startswith("$") and word in reference for word in value.split())


def auth_hint(credentials: Credentials | None) -> str:
    """A hint to add to a refused AUTH when a password looks like a copy slip (never the value)."""
    if credentials is None:
        return ""
    for name, value in (("password", credentials.password),
                        ("sentinel password", credentials.sentinel_password)):
        if value and value != value.strip():
            return (f"; note: the {name} Secret's value begins or ends with whitespace or a "
                    f"newline, which bots receive too (was it made with `echo` without -n?)")
    return ""


def resolve(spec: StoreSpec, secrets: Mapping[str, SecretData | None]) -> Credentials:
    """The store's credentials from the data of the Secrets it names (see the module doc)."""
    redis = spec.redis
    password: str | None = None
    if redis.password is not None:
        password = _password(secrets, redis.password, what="spec.redis.passwordSecretRef",
                             env=spec.info.password_env)
    sentinel_password: str | None = None
    if redis.sentinel.password is not None:
        sentinel_password = _password(
            secrets, redis.sentinel.password, what="spec.redis.sentinel.passwordSecretRef",
            env=spec.info.sentinel_password_env,
        )
    ca = cert = key = None
    if redis.tls.enabled and redis.tls.ca is not None:
        ca = _value(secrets, redis.tls.ca, what="spec.redis.tls.caSecretRef")
    if redis.tls.enabled and redis.tls.client_cert_secret:
        name = redis.tls.client_cert_secret
        what = "spec.redis.tls.clientCertSecretRef"
        cert = _value(secrets, SecretKeyRef(name, TLS_CERT_KEY), what=what)
        key = _value(secrets, SecretKeyRef(name, TLS_KEY_KEY), what=what)
    return Credentials(
        password=password, sentinel_password=sentinel_password, ca_pem=ca, cert_pem=cert,
        key_pem=key,
    )


def redact(text: str, credentials: Credentials | None) -> str:
    """``text`` with every secret value replaced by ``<redacted>``."""
    if credentials is None:
        return text
    for value in credentials.values():
        if value:
            text = text.replace(value, REDACTED)
    return text
