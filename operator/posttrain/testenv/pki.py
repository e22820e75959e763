"""The certificates and keys a throwaway control plane needs, made with ``cryptography``.

One CA signs the API server's serving certificate, the admin client certificate (group
``system:masters``) and the front proxy's client certificate (for aggregated API servers); the controller manager gets the CA's key too, to sign approved CSRs. Service
account tokens are signed by a separate RSA key pair. Everything is written as PEM files into one
folder; the private keys are readable by the owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["FRONT_PROXY_CLIENT", "Pki", "make_pki"]

FRONT_PROXY_CLIENT = "front-proxy-client"

_VALIDITY = dt.timedelta(days=365)

_API_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files written by :func:`make_pki`."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    proxy_cert: Path
    proxy_key: Path
    sa_key: Path
    sa_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are made in microseconds, unlike RSA; every component accepts them.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def make_pki(directory: Path, *, service_ip: str = "10.96.0.1") -> Pki:
    """Create a CA, the API server's serving and admin client certificates and the SA key pair.

    ``service_ip`` is the first address of the service CIDR (the ``kubernetes`` Service), which
    in-cluster clients use, so it is one of the serving certificate's SANs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        dir=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        proxy_cert=directory / "front-proxy-client.crt",
        proxy_key=directory / "front-proxy-client.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )

    ca_key = _key()
    ca_name = _name("posttrain-testenv-ca")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)

    def leaf(
        common_name: str, organization: str | None, usage: x509.ObjectIdentifier
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateBuilder]:
        key = _key()
        builder = (
            _builder(_name(common_name, organization), ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(aki, critical=False)
        )
        return key, builder

    serving_key, serving = leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in _API_SERVER_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    serving_cert = serving.add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(
        ca_key, hashes.SHA256()
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving_cert)

    admin_key, admin = leaf("admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, admin.sign(ca_key, hashes.SHA256()))

    # The API server's client certificate towards aggregated API servers (the front proxy).
    proxy_key, proxy = leaf(FRONT_PROXY_CLIENT, None, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_key(pki.proxy_key, proxy_key)
    _write_cert(pki.proxy_cert, proxy.sign(ca_key, hashes.SHA256()))

    # Service account tokens: RS256 is what every consumer of these tokens supports.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
