r"""A minimal cluster DNS for the real node: Service names resolve to their ready endpoints.

The test environment has no kube-proxy and no CoreDNS. Pods on the real node reach a Service by its
DNS name (``teacher.ns.svc``, what the operator hands workloads for a served teacher) through this
server, which answers ``A`` queries for ``<service>.<namespace>.svc.<domain>`` with the addresses of
the Service's ready endpoints, like a headless Service (so the Service's port must equal its target
port, as the operator's teacher Services do), and ``kubernetes.default.svc`` with the API server's
Service address (which the node routes to the API server). Every other name gets NXDOMAIN: pods of
the test environment reach nothing outside.

    python -m posttrain.testenv.dns --listen 10.85.0.1:53 --server https://127.0.0.1:6443 \
        --ca ca.crt --cert admin.crt --key admin.key

Standard library only; one thread, one UDP socket.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["answer", "main", "service_addresses"]

DOMAIN = "cluster.local"
KUBERNETES_SERVICE = ("kubernetes", "default")
TTL = 1
_A, _IN = 1, 1
_NXDOMAIN, _NOTIMP = 3, 4

Lookup = Callable[[str, str], list[str]]


def _parse_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length & 0xC0:  # compression pointers do not occur in questions
            raise ValueError("compressed name in a question")
        labels.append(packet[offset : offset + length].decode("ascii", "replace").lower())
        offset += length


def service_of(name: str, domain: str = DOMAIN) -> tuple[str, str] | None:
    """(service, namespace) named by ``<service>.<namespace>.svc.<domain>``, else None."""
    suffix = f".svc.{domain}"
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    return (parts[0], parts[1]) if len(parts) == 2 else None


def answer(query: bytes, lookup: Lookup, domain: str = DOMAIN) -> bytes:
    """The response to one DNS query packet; ``lookup(service, namespace)`` gives the addresses."""
    (qid, flags, qdcount) = struct.unpack("!HHH", query[:6])
    name, end = _parse_name(query, 12)
    qtype, qclass = struct.unpack("!HH", query[end : end + 4])
    question = query[12 : end + 4]
    rd = flags & 0x0100
    if qdcount != 1 or flags & 0x7800:  # one standard query only
        return struct.pack("!HHHHHH", qid, 0x8000 | rd | _NOTIMP, 1, 0, 0, 0) + question
    target = service_of(name, domain)
    addresses = lookup(*target) if target is not None else []
    if target is None or (not addresses and target != KUBERNETES_SERVICE):
        code = _NXDOMAIN if target is None else 0  # a known Service without ready endpoints: no data
        return struct.pack("!HHHHHH", qid, 0x8400 | rd | code, 1, 0, 0, 0) + question
    records = b""
    count = 0
    if qtype == _A and qclass == _IN:
        for address in addresses:
            records += struct.pack("!HHHIH", 0xC00C, _A, _IN, TTL, 4) + socket.inet_aton(address)
            count += 1
    return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, count, 0, 0) + question + records


def service_addresses(server: str, context: ssl.SSLContext, service_ip: str) -> Lookup:
    """A lookup that asks the API server for a Service's ready endpoint addresses."""

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(server + path, context=context, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    def lookup(service: str, namespace: str) -> list[str]:
        if (service, namespace) == KUBERNETES_SERVICE:
            return [service_ip]
        try:
            slices = get(
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
                f"?labelSelector=kubernetes.io/service-name%3D{service}"
            )
        except (urllib.error.URLError, OSError, ValueError):
            return []
        out: list[str] = []
        for item in slices.get("items") or []:
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready", True):
                    out += [a for a in endpoint.get("addresses", []) if a.count(".") == 3]
        return sorted(set(out))

    return lookup


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    parser.add_argument("--server", required=True, help="the API server's URL")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--service-ip", default="10.96.0.1", help="address of the kubernetes Service")
    args = parser.parse_args(argv)
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    lookup = service_addresses(args.server.rstrip("/"), context, args.service_ip)
    host, port = args.listen.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))
        while True:
            query, peer = sock.recvfrom(512)
            try:
                sock.sendto(answer(query, lookup), peer)
            except (ValueError, IndexError, struct.error):
                continue


if __name__ == "__main__":
    raise SystemExit(main())
