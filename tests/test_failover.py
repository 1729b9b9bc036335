"""The failover scenario on a real 3-node cluster: kill the leader of order_placed mid-stream.

Needs the services to take AMQP_URLS (every node's address) and fail over to a survivor.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import require_rabbitmq

from harness.scenarios.failover import failover, leader_changes, moved_to_survivor

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_leader_changes_skip_gaps_and_repeats():
    leaders = pd.DataFrame({"t": [0, 1, 2, 3, 4], "leader": ["a", "a", None, "b", "b"]})
    assert leader_changes(leaders) == [{"t": 0.0, "leader": "a"}, {"t": 3.0, "leader": "b"}]


def test_moved_to_survivor_can_say_no():
    links = pd.DataFrame({"t": [0, 1, 2, 0, 1, 2], "service": ["x"] * 3 + ["y"] * 3,
                          "node": ["a", None, "a", "a", "b", "b"]})
    assert moved_to_survivor(links, "a", 0.5, 1.5) == {"x": False, "y": True}


def test_failover_keeps_every_order_and_a_new_node_leads(tmp_path):
    require_rabbitmq()
    result = failover(orders=120, rate=30.0, kill_after_s=2.0, down_s=8.0, out=tmp_path,
                      progress=False)
    s = result.summary
    assert s["lost"] == 0 and s["double_reservations"] == 0, result.verdict
    assert s["new_leader"] and s["new_leader"] != s["killed"]
    assert (result.run_dir / "failover.png").exists()
    assert result.valid, result.verdict.problems
