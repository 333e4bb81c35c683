"""Secret values are used exactly as bot pods get them, and values bots cannot use are refused.

That the refusal matches Rasa's own loader is proven with real Rasa in
tests/rasa/test_password_expansion.py; here: what the operator does with the value.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from turnstile.operator.decide.credentials import Credentials, auth_hint, resolve
from turnstile.operator.model.errors import SecretValueError
from turnstile.operator.model.specs import parse_store

pytestmark = pytest.mark.unit


def _store(**redis: Any) -> Any:
    return parse_store({
        "kind": "LockStore", "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"redis": {"host": "r", "passwordSecretRef": {"name": "auth"}, **redis}},
    })  # fmt: skip


def _data(raw: bytes) -> dict[str, dict[str, str] | None]:
    return {"auth": {"password": base64.b64encode(raw).decode()}}


def test_the_password_keeps_every_byte_a_pod_gets() -> None:
    # A pod's env var from this Secret ends with the newline; so does what the operator probes.
    assert resolve(_store(), _data(b"s3cret\n")).password == "s3cret\n"
    assert resolve(_store(), _data(b" s3cret")).password == " s3cret"


@pytest.mark.parametrize("raw", [b"$", b"a $ b", b"${", b"x ${TURN"])
def test_a_password_rasa_cannot_expand_is_refused_without_showing_it(raw: bytes) -> None:
    with pytest.raises(SecretValueError) as caught:
        resolve(_store(), _data(raw))
    assert caught.value.reason == "SecretValueUnusable"
    text = str(caught.value)
    assert "Secret 'auth' key 'password' (spec.redis.passwordSecretRef)" in text
    assert "${TURNSTILE_LOCK_STORE_PASSWORD}" in text and "Change the password" in text
    if len(raw) > 2:
        assert raw.decode() not in text


@pytest.mark.parametrize("raw", [b"pa$$word", b"$abc", b"$$"])
def test_dollar_signs_rasa_expands_fine_are_accepted(raw: bytes) -> None:
    assert resolve(_store(), _data(raw)).password == raw.decode()


def test_a_password_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(SecretValueError, match="is not UTF-8 text"):
        resolve(_store(), _data(b"\xff\xfe"))


def test_the_sentinel_password_gets_the_same_checks() -> None:
    store = _store(deploymentMode="sentinel", endpoints=["s:26379"],
                   sentinel={"passwordSecretRef": {"name": "sentinel-auth"}})
    data = {**_data(b"fine"), "sentinel-auth": {"password": base64.b64encode(b"$").decode()}}
    with pytest.raises(SecretValueError, match=r"spec\.redis\.sentinel\.passwordSecretRef"):
        resolve(store, data)


def test_a_refused_login_with_a_trailing_newline_gets_a_hint() -> None:
    assert "was it made with `echo` without -n?" in auth_hint(Credentials(password="pw\n"))
    assert auth_hint(Credentials(password="pw")) == ""
    assert "pw" not in auth_hint(Credentials(password="pw\n"))
    assert auth_hint(None) == ""
