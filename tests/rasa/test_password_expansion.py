"""The operator's check of a password against Rasa's ``${VAR}`` expansion is Rasa's own rule.

A bot reads ``password: ${TURNSTILE_LOCK_PASSWORD}`` from the rendered ``endpoints.yml``; Rasa's
loader expands it from the pod's env var, which holds the Secret's bytes exactly. The operator
refuses a Secret whose value Rasa would refuse (``breaks_rasa_expansion``) and probes with the
bytes as they are. Here real Rasa reads each sample: it fails exactly where the operator says it
will, and otherwise hands the store the value unchanged (a trailing newline included).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rasa.conftest import RASA_VERSION, require_rasa
from turnstile.operator.decide.credentials import breaks_rasa_expansion
from turnstile.operator.model.kinds import LOCK_STORE

require_rasa()
if RASA_VERSION is not None:
    from rasa.shared.exceptions import RasaException
    from rasa.utils.endpoints import read_endpoint_config

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

SAMPLES = [
    "plain-password", "with inner space", "$", "a $ b", "${", "${TURN", "$abc", "pa$$word",
    "$$", "ends-with-newline\n", "${TURNSTILE_LOCK_STORE_PASSWORD}",
    "${TURNSTILE_LOCK_STORE_PASSWORD", "  padded  ", "tab\tthen $",
]


@pytest.mark.parametrize("value", SAMPLES)
def test_rasa_refuses_exactly_the_passwords_the_operator_refuses(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = LOCK_STORE.password_env
    monkeypatch.setenv(env, value)
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "lock_store:\n  type: turnstile.rasa.TicketLockStore\n  host: 127.0.0.1\n"
        f"  password: ${{{env}}}\n"
    )
    predicted = breaks_rasa_expansion(value, env)
    try:
        config = read_endpoint_config(str(path), "lock_store")
    except RasaException as exc:
        assert predicted, f"Rasa refused {value!r} but the operator would pass it: {exc}"
        assert "environment variables" in str(exc)
        return
    assert not predicted, f"Rasa loaded {value!r} but the operator would refuse it"
    assert config is not None
    assert config.kwargs["password"] == value  # the Secret's bytes, nothing stripped
