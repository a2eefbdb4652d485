"""The address a sweep node advertises: never a loopback one where another node can be routed to.

Debian's /etc/hosts maps the host name to 127.0.1.1, and on the store's own host the route toward the store
is the loopback, so node 0 used to advertise 127.x: every trial it hosted then failed and node 0 was named
bad. These use this host's real routing table (a UDP socket's connect sends no packet)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from verify.cluster.sweeprun import is_loopback, local_address, reachable_address


def _own_ipv4() -> str:
    """A non-loopback IPv4 address of one of this host's own interfaces."""
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not is_loopback(address):
            return address
    pytest.skip("this host has no non-loopback IPv4 interface to route toward")


def test_the_store_host_routes_toward_itself_through_the_loopback():
    assert is_loopback(local_address("127.0.1.1"))  # the fault: what node 0 found by itself


def test_a_loopback_address_is_replaced_by_the_route_toward_another_node():
    other = _own_ipv4()
    found = reachable_address("127.0.1.1", ["127.0.0.1", other])
    assert not is_loopback(found), found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((found, 0))  # an address of this host, not a made-up one


def test_a_reachable_address_stays_and_all_loopback_stays_loopback():
    assert reachable_address("192.0.2.7", ["127.0.0.1"]) == "192.0.2.7"
    assert reachable_address("127.0.1.1", ["127.0.0.1"]) == "127.0.1.1"  # one host: loopback is right
