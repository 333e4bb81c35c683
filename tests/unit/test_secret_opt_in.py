"""A store may use only Secrets marked for stores: the label decides, before any value is read."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from turnstile.operator.decide.credentials import (
    SecretObject,
    refuse_unmarked,
    resolve,
    secret_fields,
)
from turnstile.operator.model.errors import SecretError, SecretNotOptedInError
from turnstile.operator.model.kinds import OPT_IN_LABEL
from turnstile.operator.model.specs import parse_store

PASSWORD = "pa55-w0rd-never-shown"
MARKED = {OPT_IN_LABEL: "true"}


def _store(**redis: Any) -> Any:
    return parse_store({
        "kind": "LockStore", "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"redis": {"host": "r", **redis}},
    })  # fmt: skip


def _secret(labels: dict[str, str], **data: str) -> SecretObject:
    return SecretObject(labels, {k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


TLS_STORE = {
    "passwordSecretRef": {"name": "auth"},
    "tls": {"enabled": True, "caSecretRef": {"name": "ca"}, "clientCertSecretRef": {"name": "cl"}},
}


def test_every_secret_field_is_named_in_spec_order() -> None:
    assert secret_fields(_store(**TLS_STORE)) == [
        ("spec.redis.passwordSecretRef", "auth"),
        ("spec.redis.tls.caSecretRef", "ca"),
        ("spec.redis.tls.clientCertSecretRef", "cl"),
    ]


def test_a_labelled_secret_is_used() -> None:
    store = _store(passwordSecretRef={"name": "auth"})
    found = {"auth": _secret(MARKED, password=PASSWORD)}
    refuse_unmarked(store, found)
    assert resolve(store, {n: s.data for n, s in found.items()}).password == PASSWORD


@pytest.mark.parametrize("labels", [{}, {OPT_IN_LABEL: "false"}, {OPT_IN_LABEL: "yes"},
                                    {"app": "payments"}])  # fmt: skip
def test_a_secret_without_the_label_is_refused_with_the_fix(labels: dict[str, str]) -> None:
    store = _store(passwordSecretRef={"name": "payments-db"})
    with pytest.raises(SecretNotOptedInError) as refused:
        refuse_unmarked(store, {"payments-db": _secret(labels, password=PASSWORD)})
    assert refused.value.reason == "SecretNotOptedIn"
    message = refused.value.message
    assert "'payments-db'" in message and "spec.redis.passwordSecretRef" in message
    assert f"kubectl label secret payments-db {OPT_IN_LABEL}=true" in message
    assert PASSWORD not in message
    assert isinstance(refused.value, SecretError)


def test_the_tls_secrets_need_the_label_too() -> None:
    store = _store(**TLS_STORE)
    found = {"auth": _secret(MARKED), "ca": _secret(MARKED), "cl": _secret({})}
    with pytest.raises(SecretNotOptedInError, match=r"spec\.redis\.tls\.clientCertSecretRef"):
        refuse_unmarked(store, found)


def test_a_missing_secret_is_left_to_resolve() -> None:
    store = _store(passwordSecretRef={"name": "auth"})
    refuse_unmarked(store, {"auth": None})
    with pytest.raises(SecretError) as missing:
        resolve(store, {"auth": None})
    assert missing.value.reason == "SecretNotFound"


def test_a_secret_object_reads_labels_and_data_from_the_api_body() -> None:
    secret = SecretObject.from_body(
        {"metadata": {"name": "a", "labels": MARKED}, "data": {"password": "cHc="}}
    )
    assert secret.opted_in and secret.data == {"password": "cHc="}
    bare = SecretObject.from_body({"metadata": {"name": "a"}})
    assert not bare.opted_in and bare.data == {}
    assert "cHc=" not in repr(secret)
