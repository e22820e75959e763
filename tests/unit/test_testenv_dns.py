"""The real node's cluster DNS answers Service names with ready endpoints and nothing else."""

from __future__ import annotations

import socket
import struct

from posttrain.testenv.dns import answer, service_of


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _addresses(response: bytes, query: bytes) -> tuple[int, list[str]]:
    rcode = struct.unpack("!H", response[2:4])[0] & 0xF
    count = struct.unpack("!H", response[6:8])[0]
    records = response[len(query) :]
    return rcode, [socket.inet_ntoa(records[i * 16 + 12 : i * 16 + 16]) for i in range(count)]


def lookup(service: str, namespace: str) -> list[str]:
    return {("teacher", "ns"): ["10.85.0.7", "10.85.0.8"], ("kubernetes", "default"): ["10.96.0.1"]}.get(
        (service, namespace), []
    )


def test_service_names_resolve_to_endpoints() -> None:
    query = _query("teacher.ns.svc.cluster.local")
    response = answer(query, lookup)
    assert response[:2] == query[:2]
    assert _addresses(response, query) == (0, ["10.85.0.7", "10.85.0.8"])
    kubernetes = _query("kubernetes.default.svc.cluster.local")
    assert _addresses(answer(kubernetes, lookup), kubernetes) == (0, ["10.96.0.1"])


def test_other_names_are_nxdomain_and_other_types_empty() -> None:
    for name in ("teacher.ns.svc.ns.svc.cluster.local", "pypi.org", "other.ns.svc.cluster.local"):
        query = _query(name)
        rcode, addresses = _addresses(answer(query, lookup), query)
        assert addresses == [] and rcode == (0 if name.startswith("other") else 3), name
    aaaa = _query("teacher.ns.svc.cluster.local", qtype=28)
    assert _addresses(answer(aaaa, lookup), aaaa) == (0, [])
    assert service_of("teacher.ns.svc.cluster.local") == ("teacher", "ns")
