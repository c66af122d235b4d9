"""The suite runs with the network blocked (pytest-socket, configured in pyproject.toml):
gradleak needs no network, and a test that reached for it would fail here."""

from __future__ import annotations

import socket

import pytest

pytest_socket = pytest.importorskip("pytest_socket")


def test_an_outbound_connection_is_refused() -> None:
    with pytest.raises(pytest_socket.SocketBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed


def test_a_name_lookup_is_refused() -> None:
    with pytest.raises(pytest_socket.SocketBlockedError):
        socket.getaddrinfo("example.org", 443)


def test_local_pipes_still_work() -> None:
    # Worker processes talk over Unix sockets and pipes; only the network is blocked.
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
