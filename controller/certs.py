"""The webhook's certificates, as pure functions: make a CA and a serving certificate, and decide
whether a stored pair can still be served.

No Kubernetes here (``controller/webhook.py`` stores the result in the ``metallb-webhook-cert``
Secret and injects the CA as ``caBundle``). The layout of that Secret is MetalLB's
(open-policy-agent/cert-controller): ``ca.crt``, ``ca.key``, ``tls.crt``, ``tls.key``, all PEM.

Keys are ECDSA P-256: as strong as RSA-3072 for this purpose, generated in a millisecond
(RSA keygen can take a second on a busy CI node), and accepted by every Go TLS client.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
# the API server's clock and ours may disagree a little: certificates start a bit in the past
BACKDATE = dt.timedelta(hours=1)
DEFAULT_ROTATE_BEFORE = dt.timedelta(days=30)
SERVICE_NAME = "metallb-webhook-service"

SECRET_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True)
class CertBundle:
    """PEM bytes of the CA and the serving certificate, as stored in the Secret."""
    ca_crt: bytes
    ca_key: bytes
    tls_crt: bytes
    tls_key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return {"ca.crt": self.ca_crt, "ca.key": self.ca_key, "tls.crt": self.tls_crt, "tls.key": self.tls_key}

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> "CertBundle":
        missing = [k for k in SECRET_KEYS if not data.get(k)]
        if missing:
            raise ValueError(f"missing keys {', '.join(missing)}")
        return cls(data["ca.crt"], data["ca.key"], data["tls.crt"], data["tls.key"])

    def serving_not_after(self) -> dt.datetime:
        return x509.load_pem_x509_certificate(self.tls_crt).not_valid_after_utc

    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.tls_crt).serial_number


def dns_names(namespace: str, service: str = SERVICE_NAME) -> list[str]:
    """The names the API server uses to reach the in-cluster Service."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):  # dedupe, keep order
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def new_ca(namespace: str, now: Optional[dt.datetime] = None, validity: dt.timedelta = CA_VALIDITY):
    """A self-signed CA: (certificate, key)."""
    now = now or _now()
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "metalxdp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"metalxdp-webhook-ca.{namespace}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def new_serving_cert(ca_cert, ca_key, hosts: list[str], now: Optional[dt.datetime] = None,
                     validity: dt.timedelta = SERVING_VALIDITY):
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed by the CA."""
    now = now or _now()
    key = _key()
    not_after = min(now + validity, ca_cert.not_valid_after_utc)  # never outlive the CA
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def generate(namespace: str, hosts: list[str], ca: Optional[tuple] = None,
             now: Optional[dt.datetime] = None) -> CertBundle:
    """A new bundle; with ``ca`` = (cert, key) only the serving certificate is new, so the
    ``caBundle`` the API server trusts stays the same."""
    ca_cert, ca_key = ca or new_ca(namespace, now)
    cert, key = new_serving_cert(ca_cert, ca_key, hosts, now)
    return CertBundle(ca_cert.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key),
                      cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def problems(bundle: CertBundle, hosts: list[str], rotate_before: dt.timedelta = DEFAULT_ROTATE_BEFORE,
             now: Optional[dt.datetime] = None) -> tuple[list[str], Optional[tuple]]:
    """Why ``bundle`` must not be served (empty list: it is fine), and the CA (cert, key) if the
    CA itself is still usable (so a rotation can keep it).

    Checked: every PEM parses; the keys match their certificates; the serving certificate is
    signed by the CA and names every host; neither expires within ``rotate_before``.
    """
    now = now or _now()
    try:
        ca_cert = x509.load_pem_x509_certificate(bundle.ca_crt)
        ca_key = serialization.load_pem_private_key(bundle.ca_key, None)
    except (ValueError, TypeError) as e:
        return [f"CA does not parse ({e})"], None
    ca: Optional[tuple] = (ca_cert, ca_key)
    out: list[str] = []
    if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
        return ["ca.key does not match ca.crt"], None
    if ca_cert.not_valid_after_utc - rotate_before < now:
        out.append(f"CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d} (rotate {rotate_before.days} days before)")
        ca = None
    try:
        cert = x509.load_pem_x509_certificate(bundle.tls_crt)
        key = serialization.load_pem_private_key(bundle.tls_key, None)
    except (ValueError, TypeError) as e:
        return out + [f"serving certificate does not parse ({e})"], ca
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        out.append("tls.key does not match tls.crt")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception) as e:  # InvalidSignature has no common base
        out.append(f"serving certificate is not signed by ca.crt ({type(e).__name__})")
    if cert.not_valid_after_utc - rotate_before < now:
        out.append(f"serving certificate expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                   f"(rotate {rotate_before.days} days before)")
    if cert.not_valid_before_utc > now:
        out.append("serving certificate is not valid yet")
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    have = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    have |= {str(n) for n in names.get_values_for_type(x509.IPAddress)}
    want = set()
    for h in hosts:
        try:
            want.add(str(ipaddress.ip_address(h)))
        except ValueError:
            want.add(h)
    if want - have:
        out.append(f"serving certificate does not name {', '.join(sorted(want - have))}")
    return out, ca
