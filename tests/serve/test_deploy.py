"""Ports for servers started later: outside the range outgoing connections draw from."""

from __future__ import annotations

import socket

import pytest

from serve import deploy


def test_free_ports_lie_between_rays_worker_ports_and_the_ephemeral_range() -> None:
    ports = [deploy.free_port() for _ in range(50)]
    assert len(set(ports)) == 50, "never the same port twice in a process"
    low = deploy._ephemeral_low()
    assert all(deploy.FREE_PORTS_FROM <= port < low for port in ports)
    with socket.socket() as server:  # and each is free to bind
        server.bind(("127.0.0.1", ports[0]))


def test_without_room_below_the_ephemeral_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deploy, "_ephemeral_low", lambda: deploy.FREE_PORTS_FROM)
    port = deploy.free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))


def test_make_serve_turns_rays_usage_stats_off() -> None:
    env: dict[str, str] = {}
    deploy.use_throughput_mode(env)
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    kept = {"RAY_USAGE_STATS_ENABLED": "1"}  # a setting of the environment's own wins
    deploy.use_throughput_mode(kept)
    assert kept["RAY_USAGE_STATS_ENABLED"] == "1"
