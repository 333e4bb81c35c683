"""Pure parts of the store probe: reading CLUSTER NODES, and failing fast with a reason."""

from __future__ import annotations

from turnstile.stores.config import RedisSettings
from turnstile.stores.probe import _healthy_cluster_nodes, probe

NODES = """\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected 10923-16383
b1 127.0.0.1:7003@17003 slave a1 0 1 1 connected
"""


def test_raw_cluster_nodes_count_healthy_nodes_and_covered_slots() -> None:
    assert _healthy_cluster_nodes(NODES) == (3, 10923)


def test_parsed_cluster_nodes_are_read_too() -> None:
    parsed = {
        "127.0.0.1:7000": {"flags": "myself,master", "connected": True, "slots": [["0", "16383"]]},
        "127.0.0.1:7001": {"flags": "slave", "connected": True, "slots": []},
        "127.0.0.1:7002": {"flags": "slave,fail", "connected": False, "slots": []},
    }
    assert _healthy_cluster_nodes(parsed) == (2, 16384)


async def test_a_closed_port_is_unreachable_with_the_address_in_the_message() -> None:
    report = await probe(RedisSettings(host="127.0.0.1", port=1), timeout=1.0)
    assert (report.ok, report.reason) == (False, "Unreachable")
    assert "127.0.0.1:1" in report.message
    assert report.latency_ms is None
