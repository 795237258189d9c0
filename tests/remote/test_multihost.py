"""Several hosts for real: a control host (nats-server, SeaweedFS, the bot engine) and up to four
worker hosts in network namespaces, each in a cgroup limited to a quarter of a core.

Throughput must grow with the hosts; when one worker is killed and another is cut off while 16
conversations run, the affected conversations hear of it within 5 s, the others keep their
variables, and no acknowledged output or metadata is lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote.cluster import Cluster, can_build

pytestmark = pytest.mark.skipif(can_build() is not None, reason=f"multi-host: {can_build()}")

SECONDS = 10  # per throughput window
POOL = "6"  # warm kernels per worker: re-placed sessions start at once


@pytest.mark.timeout(900)
def test_throughput_grows_with_hosts_and_a_lost_host_is_survived(tmp_path: Path) -> None:
    job = {"conversations": 16, "pool": int(POOL)}
    with Cluster(tmp_path / "cluster", cpu_quota=0.25) as cluster:
        cluster.add_worker("w1", SANDBOX_WARM_POOL=POOL)
        one = cluster.drive(mode="throughput", seconds=SECONDS, **job)
        cluster.add_worker("w2", SANDBOX_WARM_POOL=POOL)
        two = cluster.drive(mode="throughput", seconds=SECONDS, **job)
        cluster.add_worker("w3", SANDBOX_WARM_POOL=POOL)
        cluster.add_worker("w4", SANDBOX_WARM_POOL=POOL)
        four = cluster.drive(mode="throughput", seconds=SECONDS, **job)
        lost = cluster.drive(
            mode="failover", seconds=12, strike_after=3, kill="w2", cut="w3", **job
        )
    print(
        f"throughput: {one['per_second']:.1f} / {two['per_second']:.1f} / "
        f"{four['per_second']:.1f} per s; failover: {lost}"
    )

    # Every execution went to its own session's interpreter, on every host.
    assert (one["gaps"], two["gaps"], four["gaps"]) == (0, 0, 0)
    assert (one["hosts"], two["hosts"]) == (["w1"], ["w1", "w2"])
    assert four["hosts"] == ["w1", "w2", "w3", "w4"]
    # Ideal growth is 2x and 4x (each host is a quarter core); measured 2.0-2.3x and 3.7-4.6x.
    # The bound leaves room for a stall of the shared control side in one 10 s window (one run
    # in six measured 1.70x at 2 hosts), and still fails if placement or workers do not scale.
    assert two["per_second"] >= 1.5 * one["per_second"], (one, two)
    assert four["per_second"] >= 2.8 * one["per_second"], (one, four)

    # Placement spreads by free slots among workers that beat on time (usually all four).
    assert {"w2", "w3"} <= set(lost["placed"]) and len(lost["placed"]) >= 3
    assert lost["affected"] >= 4  # about four each on the killed and the cut host
    assert lost["reported"] == lost["affected"] and lost["unexpected"] == []
    assert max(lost["report_s"]) <= 5.0, lost["report_s"]
    assert lost["wrong"] == []  # the others counted on without a gap
    assert lost["acknowledged"] > 0 and lost["lost_outputs"] == 0
