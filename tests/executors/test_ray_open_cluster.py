"""Which clusters recond calls open to others (issue 26): no token authentication and a node
off loopback. The facts come from recond/executors/ray_probe.py, which the cluster tests run on
a real cluster (test_ray_executor.py); here the rule itself, on the facts it is given.
"""

from __future__ import annotations

from recond.executors.ray_probe import ClusterFacts, open_to_others


def test_a_cluster_without_token_auth_on_a_network_address_is_open():
    warning = open_to_others(ClusterFacts(["127.0.0.1", "10.0.0.7"], token_auth=False))
    assert warning is not None and "10.0.0.7" in warning and "127.0.0.1" not in warning
    assert "docs/ray.md" in warning


def test_token_auth_or_loopback_only_is_not_open():
    assert open_to_others(ClusterFacts(["10.0.0.7"], token_auth=True)) is None
    assert open_to_others(ClusterFacts(["127.0.0.1", "::1"], token_auth=False)) is None
    assert open_to_others(None) is None  # a private Ray inside the daemon


def test_doctor_says_when_no_cluster_answers_within_the_connect_time(tmp_path):
    import socket

    import pytest

    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    from recond.config import Settings
    from recond.doctor import _ray_checks

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once it is closed
    settings = Settings(executor="ray", ray_address=address, ray_connect_seconds=4, state_dir=tmp_path)
    [check] = _ray_checks(settings)
    assert check.level == "fail" and f"no Ray cluster answers at {address}" in check.message
    assert "no answer within ray_connect_seconds = 4 s" in check.message
