"""Where the credentials for a Redis AUTH come from, for both connection paths.

redis-py asks a :class:`redis.credentials.CredentialProvider` for ``(username, password)`` (or
``(password,)``) each time it opens a connection; the multiplexed lane (``multiplexed``) asks
the same provider before its own ``AUTH``. One provider serves one :class:`RedisConnection`,
so a changed credential reaches every new connection of a store at once. Connections already
open stay authenticated: Redis checks a password at ``AUTH`` only.

Three providers, chosen by :func:`credential_provider` from the settings:

* ``password`` (and ``username``): static, redis-py's ``UsernamePasswordCredentialProvider``;
* ``password_file``: :class:`PasswordFileProvider` reads the file again whenever it changed (a
  mounted Kubernetes Secret is rotated in place: the kubelet swaps a symlink);
* ElastiCache IAM, selected as Rasa Pro 3.21 selects it: ``IAM_CLOUD_PROVIDER=aws`` and
  ``ELASTICACHE_REDIS_AWS_IAM_ENABLED=true`` in the environment, ``AWS_ELASTICACHE_CLUSTER_NAME``
  and ``AWS_REGION``/``AWS_DEFAULT_REGION``, the store's ``username`` as the IAM-enabled user.
  :class:`ElastiCacheIAMProvider` signs the same SigV4 presigned ``connect`` URL Rasa's
  ``AWSElasticacheRedisIAMCredentialsProvider`` makes (15 minutes valid, renewed 60 s early).
  Its ``reauth_every`` makes the multiplexed lanes send ``AUTH`` with a fresh token every 11 h
  (ElastiCache closes an IAM connection 12 h after its last ``AUTH``).

No provider ever puts a credential into a message, a log line or a ``repr``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, cast
from urllib.parse import quote

from redis.credentials import CredentialProvider, UsernamePasswordCredentialProvider

from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import ConfigurationError

logger = logging.getLogger(__name__)

Credentials = tuple[str] | tuple[str, str]

#: Rasa Pro 3.21's switches (``rasa/core/constants.py``), read the way Rasa reads them.
IAM_CLOUD_PROVIDER_ENV: Final = "IAM_CLOUD_PROVIDER"
ELASTICACHE_IAM_ENABLED_ENV: Final = "ELASTICACHE_REDIS_AWS_IAM_ENABLED"
ELASTICACHE_CLUSTER_NAME_ENV: Final = "AWS_ELASTICACHE_CLUSTER_NAME"


def _pair(username: str | None, password: str) -> Credentials:
    return (username, password) if username else (password,)


class PasswordFileProvider(CredentialProvider):
    """The password is the content of a file (one trailing newline dropped), re-read when the
    file's identity, size or modification time changed; a file that cannot be read keeps the
    last password that could (and logs why, without it)."""

    def __init__(self, path: str, username: str | None = None, *, key: str = "password_file"):
        self.path = path
        self.username = username
        self._key = key
        self._seen: tuple[int, int, int] | None = None
        self._password = ""
        self._lock = threading.Lock()
        #: How many times the file was (re-)read; the tests watch it.
        self.reads = 0
        try:
            self._refresh()
        except OSError as exc:
            raise ConfigurationError(
                key, path, f"a readable file holding the password ({exc.strerror or exc})"
            ) from None

    def _refresh(self) -> None:
        stat = os.stat(self.path)
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen == self._seen:
            return
        text = Path(self.path).read_text()
        self._password = text[:-1] if text.endswith("\n") else text
        self._password = self._password.removesuffix("\r")
        self._seen = seen
        self.reads += 1
        if self.reads > 1:
            logger.info("%s: %s changed; new connections use the new password",
                        self._key, self.path)

    def get_credentials(self) -> Credentials:
        with self._lock:
            try:
                self._refresh()
            except OSError as exc:
                logger.warning(
                    "%s: cannot read %s (%s); keeping the password read before",
                    self._key, self.path, exc.strerror or exc,
                )
            return _pair(self.username, self._password)

    async def get_credentials_async(self) -> Credentials:
        return self.get_credentials()

    def __repr__(self) -> str:
        return f"PasswordFileProvider(path={self.path!r}, username={self.username!r})"


# ---- ElastiCache IAM --------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _q(text: str) -> str:
    return quote(text, safe="-_.~")


def presign_url(
    *,
    host: str,
    path: str,
    params: dict[str, str],
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    when: datetime.datetime,
    expires: int,
) -> str:
    """A SigV4 query-string presigned ``GET https://host/path?...`` (no scheme in the result),
    as botocore's ``RequestSigner.generate_presigned_url`` signs it: only ``host`` signed, the
    payload ``UNSIGNED-PAYLOAD``."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{when.strftime('%Y%m%d')}/{region}/{service}/aws4_request"
    query = dict(params)
    query.update({
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    })
    if session_token:
        query["X-Amz-Security-Token"] = session_token
    canonical_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
    canonical_request = "\n".join(
        ["GET", path, canonical_query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = _hmac(f"AWS4{secret_key}".encode(), when.strftime("%Y%m%d"))
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{host}{path}?{canonical_query}&X-Amz-Signature={signature}"


AwsCredentials = tuple[str, str, str | None]


def aws_credentials() -> AwsCredentials:
    """``(access key, secret key, session token)``: botocore's credential chain when botocore
    is installed (web identity, instance roles, profiles), else the ``AWS_*`` variables."""
    try:
        from botocore.session import get_session  # type: ignore[import-not-found]  # noqa: PLC0415
    except ModuleNotFoundError:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise ConfigurationError(
                ELASTICACHE_IAM_ENABLED_ENV, "true",
                "AWS credentials: pip install botocore (the AWS credential chain), or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ) from None
        return key, secret, os.environ.get("AWS_SESSION_TOKEN") or None
    found = get_session().get_credentials()
    if found is None:
        raise ConfigurationError(
            ELASTICACHE_IAM_ENABLED_ENV, "true", "AWS credentials; botocore found none"
        )
    frozen = found.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token or None


class ElastiCacheIAMProvider(CredentialProvider):
    """Rasa Pro 3.21's ElastiCache IAM token: a presigned ``connect`` URL for the user."""

    #: As Rasa: ElastiCache accepts a token for 15 minutes; a new one is made 60 s before.
    TOKEN_LIFETIME: Final = 900
    REFRESH_MARGIN: Final = 60
    #: ElastiCache closes an IAM connection 12 h after its last AUTH: the multiplexed lanes
    #: send AUTH with a fresh token this often (seconds) to keep theirs.
    reauth_every: float = 11 * 3600.0

    def __init__(
        self,
        username: str,
        cluster_name: str,
        region: str,
        *,
        credentials: Callable[[], AwsCredentials] = aws_credentials,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self.cluster_name = cluster_name
        self.region = region
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        #: How many tokens were signed; the tests watch it.
        self.signed = 0

    def token(self) -> str:
        """The current token, signed anew when it is within ``REFRESH_MARGIN`` of expiring."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - self.REFRESH_MARGIN:
                access_key, secret_key, session_token = self._credentials()
                self._token = presign_url(
                    host=self.cluster_name,
                    path="/",
                    params={"Action": "connect", "User": self.username},
                    service="elasticache",
                    region=self.region,
                    access_key=access_key,
                    secret_key=secret_key,
                    session_token=session_token,
                    when=datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc),
                    expires=self.TOKEN_LIFETIME,
                )
                self._expires_at = now + self.TOKEN_LIFETIME
                self.signed += 1
            return self._token

    def get_credentials(self) -> Credentials:
        return (self.username, self.token())

    async def get_credentials_async(self) -> Credentials:
        return self.get_credentials()

    def __repr__(self) -> str:
        return (
            f"ElastiCacheIAMProvider(username={self.username!r}, "
            f"cluster_name={self.cluster_name!r}, region={self.region!r})"
        )


def iam_enabled() -> bool:
    """Rasa's rule: ``IAM_CLOUD_PROVIDER=aws`` and ``ELASTICACHE_REDIS_AWS_IAM_ENABLED=true``."""
    return (
        os.environ.get(IAM_CLOUD_PROVIDER_ENV, "").strip().lower() == "aws"
        and os.environ.get(ELASTICACHE_IAM_ENABLED_ENV, "false").strip().lower() == "true"
    )


def elasticache_iam_provider(
    settings: RedisSettings, *, section: str = ""
) -> ElastiCacheIAMProvider:
    """The IAM provider for ``settings`` from Rasa's environment variables, or a
    ConfigurationError naming what is missing."""
    name = f"{section}.username" if section else "username"
    if not settings.username:
        raise ConfigurationError(
            name, settings.username, "the IAM-enabled ElastiCache user (IAM auth is on)"
        )
    cluster = os.environ.get(ELASTICACHE_CLUSTER_NAME_ENV, "").strip()
    if not cluster:
        raise ConfigurationError(
            ELASTICACHE_CLUSTER_NAME_ENV, cluster,
            "the ElastiCache replication group or serverless cache name (IAM auth is on)",
        )
    region = (os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "").strip()
    if not region:
        raise ConfigurationError(
            "AWS_REGION", region, "the AWS region of the cache, e.g. eu-west-1 (IAM auth is on)"
        )
    return ElastiCacheIAMProvider(settings.username, cluster, region)


def credential_provider(settings: RedisSettings) -> CredentialProvider | None:
    """The provider for a store's data nodes, or None when there is nothing to AUTH with."""
    if iam_enabled():
        return elasticache_iam_provider(settings)
    if settings.password_file is not None:
        return PasswordFileProvider(settings.password_file, settings.username)
    if settings.password is not None:
        return UsernamePasswordCredentialProvider(settings.username, settings.password)
    return None


async def current_credentials(provider: CredentialProvider) -> Credentials:
    """What ``provider`` says now, on every redis-py Turnstile supports.

    redis-py 5.0.1 added ``get_credentials_async``; 4.5's providers have only the synchronous
    ``get_credentials`` (Turnstile's own providers have both, and never block on I/O there).
    """
    get_async = getattr(provider, "get_credentials_async", None)
    if get_async is not None:
        return cast(Credentials, await get_async())
    return provider.get_credentials()
