"""One description of the spec's bounds: the CRD and the parser take them from model.schema."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.model import schema
from turnstile.operator.model.crds import crd
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import LOCK_STORE, TIMER_STORE, KindInfo
from turnstile.operator.model.specs import parse_spec

# (kind, where the field sits in the spec, its bounds)
FIELDS = [
    (LOCK_STORE, ("redis", "port"), schema.PORT),
    (LOCK_STORE, ("redis", "db"), schema.DB),
    (LOCK_STORE, ("redis", "socketTimeout"), schema.SOCKET_TIMEOUT),
    (TIMER_STORE, ("redis", "failoverTimeout"), schema.FAILOVER_TIMEOUT),
    (LOCK_STORE, ("lockLifetime",), schema.LOCK_LIFETIME),
    (TIMER_STORE, ("pollInterval",), schema.POLL_INTERVAL),
]


def _spec(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"redis": {"host": "redis"}}
    (spec["redis"] if path[0] == "redis" else spec)[path[-1]] = value
    return spec


def _crd_field(info: KindInfo, path: tuple[str, ...]) -> dict[str, Any]:
    node = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for key in path:
        node = node["properties"][key]
    return node  # type: ignore[no-any-return]


@pytest.mark.parametrize(("info", "path", "bounds"), FIELDS)
def test_the_crd_and_the_parser_share_each_bound(
    info: KindInfo, path: tuple[str, ...], bounds: schema.Bounds
) -> None:
    field = _crd_field(info, path)
    assert (field["minimum"], field["maximum"]) == (bounds.minimum, bounds.maximum)
    assert field.get("exclusiveMinimum", False) is bounds.exclusive
    top = int(bounds.maximum) if bounds.integer else bounds.maximum
    parse_spec(info.kind, _spec(path, top))
    for outside in (bounds.maximum + 1, bounds.minimum - 1):
        value = int(outside) if bounds.integer else outside
        with pytest.raises(SpecError):
            parse_spec(info.kind, _spec(path, value))
