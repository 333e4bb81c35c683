"""The chart's admission policy lets the operator write exactly the env entries it injects.

The policy (charts/turnstile-operator/templates/admission.yaml, ``injectable``) refuses an
operator patch that touches any other env entry; a name the operator injects but the policy
lacks stops every rollout with HTTP 403 (the node tier found this for the sections'
fingerprints). This keeps the two lists one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from turnstile.operator.model.kinds import KINDS
from turnstile.operator.model.specs import RASA_LOCK_LIFETIME_ENV
from turnstile.stores.fingerprint import EXPECT_ENV, STORES_FILE_ENV

pytestmark = pytest.mark.unit

POLICY = Path(__file__).resolve().parents[2] / "charts/turnstile-operator/templates/admission.yaml"


def test_every_injected_name_is_injectable_in_the_chart() -> None:
    found = re.search(r"name: injectable\n\s+expression: \"\[(.*?)\]\"", POLICY.read_text())
    assert found is not None
    allowed = set(re.findall(r"'([A-Z0-9_]+)'", found.group(1)))
    injected = {RASA_LOCK_LIFETIME_ENV, STORES_FILE_ENV, *EXPECT_ENV.values()}
    for info in KINDS.values():
        injected |= {info.password_env, info.sentinel_password_env}
    assert allowed == injected
