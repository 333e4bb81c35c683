"""spec.redis.tls.verify/checkHostname and spec.redis.sentinel: parsed, rendered, probed, warned.

The rendered keys are the store library's (``ssl_cert_reqs``, ``ssl_check_hostname``,
``sentinel_username``, ``sentinel_password``, ``sentinel_use_ssl``); the sentinels' password is a
``${VAR}`` like the data nodes' one and never appears in the ConfigMap.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide.credentials import (
    SecretObject,
    redact,
    refuse_unmarked,
    resolve,
    secret_names,
)
from turnstile.operator.decide.render import render_files, secret_env, section
from turnstile.operator.model.errors import SecretError, SecretNotOptedInError, SpecError
from turnstile.operator.model.kinds import KINDS
from turnstile.operator.model.specs import RULES, StoreSpec, parse_spec, parse_store
from turnstile.operator.probes import settings_for
from turnstile.stores.config import RedisSettings, SettingsReader

SENTINEL_PW = "s3ntinel-Pa55-never-shown"
DATA_PW = "data-Pa55-never-shown"
SENTINELS = {"deploymentMode": "sentinel", "endpoints": ["s1:26379", "s2:26379"]}
AUTH = {
    "username": "sentinel-user",
    "passwordSecretRef": {"name": "sentinel-auth", "key": "pw"},
}


def _store(kind: str = "LockStore", **redis: Any) -> StoreSpec:
    spec = {"redis": redis, "configMap": {"name": "bot"}}
    return parse_store({"kind": kind, "metadata": {"name": "s", "namespace": "ns"}, "spec": spec})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------------------ parse


def test_defaults_verify_and_no_sentinel_auth() -> None:
    store = _store(host="r", tls={"enabled": True})
    assert store.redis.tls.verify and store.redis.tls.check_hostname
    assert store.redis.sentinel.password is None and not store.redis.sentinel.tls


def test_sentinel_fields_are_read() -> None:
    store = _store(**SENTINELS, sentinel={**AUTH, "tls": True}, tls={"enabled": True})
    sentinel = store.redis.sentinel
    assert sentinel.username == "sentinel-user"
    assert (sentinel.password.name, sentinel.password.key) == ("sentinel-auth", "pw")  # type: ignore[union-attr]
    assert sentinel.tls is True
    default_key = _store(**SENTINELS, sentinel={"passwordSecretRef": {"name": "a"}})
    assert default_key.redis.sentinel.password.key == "password"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("redis", "field", "text"),
    [
        ({"host": "r", "sentinel": {"passwordSecretRef": {"name": "a"}}}, "spec.redis.sentinel",
         RULES["sentinel_auth"]),
        ({"deploymentMode": "cluster", "endpoints": ["n:7000"], "sentinel": {"tls": False}},
         "spec.redis.sentinel", RULES["sentinel_auth"]),
        ({**SENTINELS, "sentinel": {"username": "u"}}, "spec.redis.sentinel.username",
         RULES["sentinel_username_password"]),
        ({**SENTINELS, "sentinel": {"username": "${U}", "passwordSecretRef": {"name": "a"}}},
         "spec.redis.sentinel.username", "must not contain ${"),
        ({**SENTINELS, "sentinel": {"tls": True}}, "spec.redis.sentinel.tls",
         RULES["sentinel_tls"]),
        ({**SENTINELS, "sentinel": {"passwordSecretRef": {"key": "k"}}},
         "spec.redis.sentinel.passwordSecretRef.name", "name of a Secret"),
        ({"host": "r", "tls": {"enabled": True, "verify": "no"}}, "spec.redis.tls.verify",
         "true or false"),
        ({"host": "r", "tls": {"enabled": True, "checkHostname": 0}},
         "spec.redis.tls.checkHostname", "true or false"),
    ],
)
def test_invalid_specs_name_the_field(redis: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("LockStore", {"redis": redis})
    assert caught.value.field == field
    assert text in caught.value.message


# ----------------------------------------------------------------------------- render


def test_tls_verification_off_renders_the_store_librarys_keys() -> None:
    out = section(_store(host="r", tls={"enabled": True, "verify": False}))
    assert out["use_ssl"] is True and out["ssl_cert_reqs"] == "none"
    assert "ssl_check_hostname" not in out
    out = section(_store(host="r", tls={"enabled": True, "checkHostname": False}))
    assert out["ssl_check_hostname"] is False and "ssl_cert_reqs" not in out
    verified = section(_store(host="r", tls={"enabled": True}))
    assert "ssl_cert_reqs" not in verified and "ssl_check_hostname" not in verified


@pytest.mark.parametrize("kind", ["LockStore", "TimerStore"])
def test_sentinel_keys_are_rendered_with_the_password_as_a_var(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(
        kind, **SENTINELS, sentinel={**AUTH, "tls": True},
        passwordSecretRef={"name": "data-auth"}, tls={"enabled": True, "verify": False},
    )
    env = store.info.sentinel_password_env
    assert env == f"TURNSTILE_{store.info.section.upper()}_SENTINEL_PASSWORD"
    out = section(store)
    assert out["sentinel_username"] == "sentinel-user"
    assert out["sentinel_password"] == "${" + env + "}"
    assert out["sentinel_use_ssl"] is True
    assert secret_env(kind, store) == [
        (store.info.password_env, "data-auth", "password"),
        (env, "sentinel-auth", "pw"),
    ]
    (text,) = render_files([store]).values()
    assert f"sentinel_password: ${{{env}}}\n" in text  # plain, so Rasa expands it
    assert SENTINEL_PW not in text and "sentinel-auth" not in text
    # The store library reads the rendered section as a bot would (after Rasa's expansion).
    monkeypatch.setenv(env, SENTINEL_PW)
    kwargs = dict(section(store))
    kwargs["sentinel_password"] = SENTINEL_PW
    kwargs["password"] = DATA_PW
    kwargs.pop("type")
    settings = RedisSettings.read(SettingsReader(kwargs, section=store.info.section))
    assert settings.sentinel_username == "sentinel-user"
    assert settings.sentinel_password == SENTINEL_PW
    assert settings.sentinel_use_ssl and settings.ssl_cert_reqs == "none"


def test_no_sentinel_keys_without_the_fields() -> None:
    out = section(_store(**SENTINELS))
    assert not [k for k in out if k.startswith("sentinel_") and k != "sentinel_service"]
    assert secret_env("LockStore", _store(**SENTINELS)) == []


# ------------------------------------------------------------------ secrets and probe


def test_sentinel_secret_is_resolved_opted_in_and_redacted() -> None:
    store = _store(**SENTINELS, sentinel=AUTH)
    assert secret_names(store) == ["sentinel-auth"]
    unmarked = SecretObject(labels={}, data={"pw": _b64(SENTINEL_PW)})
    with pytest.raises(SecretNotOptedInError, match=r"spec\.redis\.sentinel\.passwordSecretRef"):
        refuse_unmarked(store, {"sentinel-auth": unmarked})
    with pytest.raises(SecretError, match="sentinel-auth"):
        resolve(store, {"sentinel-auth": None})
    credentials = resolve(store, {"sentinel-auth": {"pw": _b64(SENTINEL_PW + "\n")}})
    assert credentials.sentinel_password == SENTINEL_PW + "\n"  # exactly what pods get
    assert SENTINEL_PW not in repr(credentials)
    assert redact(f"AUTH {SENTINEL_PW} refused", credentials) == "AUTH <redacted> refused"


def test_probe_settings_carry_sentinel_auth_and_tls_verification(tmp_path: Path) -> None:
    store = _store(
        **SENTINELS, sentinel={**AUTH, "tls": True},
        tls={"enabled": True, "verify": False, "checkHostname": False},
    )
    credentials = resolve(store, {"sentinel-auth": {"pw": _b64(SENTINEL_PW)}})
    settings = settings_for(store, credentials, tls_dir=tmp_path)
    assert settings.sentinel_username == "sentinel-user"
    assert settings.sentinel_password == SENTINEL_PW
    assert settings.sentinel_use_ssl is True
    assert settings.ssl_cert_reqs == "none" and settings.ssl_check_hostname is False
    kwargs = settings.sentinel_kwargs()
    assert kwargs["password"] == SENTINEL_PW and kwargs["ssl"] is True
    verified = settings_for(_store(host="r", tls={"enabled": True}), credentials)
    assert verified.ssl_cert_reqs == "required" and verified.ssl_check_hostname is True


# ----------------------------------------------------------------------- the warning


def _status(store: StoreSpec, old: Any = None) -> dict[str, Any]:
    ok = cond.Condition(cond.CONNECTED, cond.TRUE, "Connected", "PING answered")
    rendered = cond.Condition(cond.CONFIG_RENDERED, cond.TRUE, "Rendered", "in ConfigMap")
    obs = cond.Observation(
        connected=ok, rendered=rendered, mode="standard", tls_warning=cond.tls_warning(store)
    )
    return cond.build_status(obs, old, generation=1, now="2026-01-01T00:00:00Z")


def test_verification_off_is_a_warning_event_once() -> None:
    off = _store(host="r", tls={"enabled": True, "verify": False})
    first = _status(off)
    warned = [e for e in cond.events(None, first) if e.reason == cond.TLS_VERIFICATION_OFF]
    assert len(warned) == 1 and warned[0].type == "Warning"
    assert "spec.redis.tls.verify" in warned[0].message
    again = _status(off, old=first)
    assert cond.events(first, again) == []  # a re-check says nothing new
    hostname = _store(host="r", tls={"enabled": True, "checkHostname": False})
    changed = _status(hostname, old=again)
    assert [e.reason for e in cond.events(again, changed)] == [cond.TLS_VERIFICATION_OFF]
    fixed = _status(_store(host="r", tls={"enabled": True}), old=changed)
    assert fixed["tlsWarning"] is None and cond.events(changed, fixed) == []
    assert cond.tls_warning(_store(host="r", tls={"verify": False})) is None  # TLS off


def test_the_operator_patch_policy_lets_injectenv_set_every_secret_env() -> None:
    """injectEnv sets every ``status.secretEnv`` name; the chart's policy must allow each."""
    chart = Path(__file__).resolve().parents[2] / "charts/turnstile-operator/templates"
    policy = (chart / "admission.yaml").read_text()
    line = next(x for x in policy.splitlines() if x.strip().startswith('expression: "[\'TURNSTILE'))
    for info in KINDS.values():
        assert f"'{info.password_env}'" in line and f"'{info.sentinel_password_env}'" in line
