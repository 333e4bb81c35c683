"""Credential providers without Redis: the SigV4 presign, the IAM switches, refresh timing."""

from __future__ import annotations

import datetime

import pytest

from turnstile.stores._redis import credentials as creds
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import ConfigurationError

pytestmark = pytest.mark.unit


def test_presign_matches_the_aws_documented_example() -> None:
    """AWS's SigV4 query-string example (S3 docs, "Authenticating Requests: Using Query
    Parameters"): same algorithm as the ElastiCache connect token, other service and path."""
    url = creds.presign_url(
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        params={},
        service="s3",
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        session_token=None,
        when=datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc),
        expires=86400,
    )
    assert url.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    assert url.startswith("examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=")


def test_token_is_reused_until_60s_before_expiry() -> None:
    now = [1_000_000.0]
    provider = creds.ElastiCacheIAMProvider(
        "app", "cache", "eu-west-1", credentials=lambda: ("AKID", "secret", None),
        clock=lambda: now[0],
    )
    first = provider.get_credentials()
    now[0] += 839
    assert provider.get_credentials() == first and provider.signed == 1
    now[0] += 1
    assert provider.get_credentials() != first and provider.signed == 2


def test_iam_is_selected_by_rasas_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RedisSettings(username="app", password="static")
    monkeypatch.delenv("IAM_CLOUD_PROVIDER", raising=False)
    assert not isinstance(creds.credential_provider(settings), creds.ElastiCacheIAMProvider)
    monkeypatch.setenv("IAM_CLOUD_PROVIDER", "aws")
    monkeypatch.setenv("ELASTICACHE_REDIS_AWS_IAM_ENABLED", "true")
    monkeypatch.delenv("AWS_ELASTICACHE_CLUSTER_NAME", raising=False)
    with pytest.raises(ConfigurationError, match="AWS_ELASTICACHE_CLUSTER_NAME"):
        creds.credential_provider(settings)
    monkeypatch.setenv("AWS_ELASTICACHE_CLUSTER_NAME", "cache")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        creds.credential_provider(settings)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    provider = creds.credential_provider(settings)
    assert isinstance(provider, creds.ElastiCacheIAMProvider)
    assert (provider.username, provider.cluster_name, provider.region) == (
        "app", "cache", "us-east-2"
    )
    with pytest.raises(ConfigurationError, match="username"):
        creds.credential_provider(RedisSettings())


def test_missing_aws_credentials_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    try:
        import botocore  # type: ignore[import-not-found]  # noqa: F401, PLC0415
    except ModuleNotFoundError:
        with pytest.raises(ConfigurationError, match="pip install botocore"):
            creds.aws_credentials()
    else:  # pragma: no cover - botocore is not a dependency of the test environment
        pytest.skip("botocore installed: its credential chain is used")


def test_sentinel_keys_and_tls(tmp_path: object) -> None:
    settings = RedisSettings.read(SettingsReader({
        "deployment_mode": "sentinel", "endpoints": ["127.0.0.1:26379"],
        "sentinel_username": "watcher", "sentinel_password": "sentinel-secret",
        "sentinel_use_ssl": "true", "ssl_ca_certs": "/ca.pem",
    }, section="lock_store"))
    kwargs = settings.sentinel_kwargs()
    assert kwargs["username"] == "watcher" and kwargs["password"] == "sentinel-secret"
    assert kwargs["ssl"] is True and kwargs["ssl_ca_certs"] == "/ca.pem"
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True
    assert "sentinel-secret" not in repr(settings)
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.read(SettingsReader({"sentinel_password": ["x"]}, section="lock_store"))
    assert str(caught.value) == "lock_store.sentinel_password: a string (got '<redacted>')"
