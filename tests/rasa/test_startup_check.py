"""``turnstile-rasa``'s start-up check reads the file as written, even once Rasa is imported.

Importing Rasa (``rasa.shared.utils.io``) registers an implicit ``${...}`` resolver on
ruamel.yaml's classes that expands references from the environment. The launcher checks the
sections the operator rendered against their fingerprints, which are over ``${VAR}`` as
written; found by ``make demo``, whose password-protected Redis put ``${...}`` in the sections
and whose pods then refused to start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rasa.conftest import RASA_VERSION, require_rasa
from turnstile.rasa.startup import Expected, problems
from turnstile.stores.fingerprint import section_fingerprint

require_rasa()
if RASA_VERSION is not None:
    import rasa.shared.utils.io  # noqa: F401 - registers Rasa's ${...} resolver, as in a pod

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

SECTION = {
    "type": "turnstile.rasa.TicketLockStore",
    "deployment_mode": "standard",
    "host": "10.0.0.19",
    "port": 6379,
    "db": 1,
    "key_prefix": "bot",
    "password": "${TURNSTILE_LOCK_STORE_PASSWORD}",
    "lock_lifetime": 60,
}
TEXT = (
    "tracker_store:\n  type: redis\n  url: 10.0.0.19\n"
    "  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n"
    "lock_store:\n  type: turnstile.rasa.TicketLockStore\n  deployment_mode: standard\n"
    "  host: 10.0.0.19\n  port: 6379\n  db: 1\n  key_prefix: bot\n"
    "  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n  lock_lifetime: 60\n"
)


@pytest.mark.parametrize("env_set", [True, False])
def test_the_pin_matches_with_rasa_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_set: bool
) -> None:
    if env_set:
        monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", "s3cret")
    else:
        monkeypatch.delenv("TURNSTILE_LOCK_STORE_PASSWORD", raising=False)
    path = tmp_path / "endpoints.yml"
    path.write_text(TEXT)
    pin = section_fingerprint(SECTION)
    assert problems(str(path), Expected(pins={"lock_store": pin})) == []
    other = section_fingerprint({**SECTION, "key_prefix": "other"})
    (found,) = problems(str(path), Expected(pins={"lock_store": other}))
    assert "not the one the operator rendered" in found and "s3cret" not in found
