"""The webhook's pure parts: certificate issuing/checking (controller/certs.py) and the shipped
manifests (deploy/webhook/ is what controller/webhook.py renders)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from controller import certs
from controller.webhook import (ENDPOINTS, BadRequest, handle_conversion, kinds_to_read,
                                validating_webhook_configuration, webhook_service)

NS = "metallb-system"
HOSTS = certs.dns_names(NS) + ["127.0.0.1"]
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def test_fresh_bundle_is_servable_and_names_every_host():
    b = certs.generate(NS, HOSTS, now=NOW)
    assert certs.problems(b, HOSTS, now=NOW)[0] == []
    cert = x509.load_pem_x509_certificate(b.tls_crt)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "metallb-webhook-service.metallb-system.svc", "metallb-webhook-service.metallb-system.svc.cluster.local"}
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc == NOW + certs.SERVING_VALIDITY
    ca = x509.load_pem_x509_certificate(b.ca_crt)
    assert ca.not_valid_after_utc == NOW + certs.CA_VALIDITY
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("days_later, rotate", [(300, False), (336, True), (400, True)])
def test_serving_certificate_rotates_30_days_before_expiry_keeping_the_ca(days_later, rotate):
    b = certs.generate(NS, HOSTS, now=NOW)
    why, ca = certs.problems(b, HOSTS, now=NOW + dt.timedelta(days=days_later))
    assert bool(why) == rotate
    if rotate:
        assert "serving certificate expires" in why[0]
        assert ca is not None  # the CA is good for 10 years: keep it, the caBundle stays
        renewed = certs.generate(NS, HOSTS, ca=ca, now=NOW + dt.timedelta(days=days_later))
        assert renewed.ca_crt == b.ca_crt and renewed.tls_crt != b.tls_crt
        assert certs.problems(renewed, HOSTS, now=NOW + dt.timedelta(days=days_later))[0] == []


def test_expiring_ca_is_replaced():
    b = certs.generate(NS, HOSTS, now=NOW)
    why, ca = certs.problems(b, HOSTS, now=NOW + certs.CA_VALIDITY - dt.timedelta(days=10))
    assert ca is None and any("CA expires" in w for w in why)


def test_serving_certificate_never_outlives_its_ca():
    ca = certs.new_ca(NS, now=NOW)
    late = NOW + certs.CA_VALIDITY - dt.timedelta(days=100)
    cert, _ = certs.new_serving_cert(*ca, HOSTS, now=late)
    assert cert.not_valid_after_utc == ca[0].not_valid_after_utc


def test_problems_found():
    a = certs.generate(NS, HOSTS, now=NOW)
    other = certs.generate(NS, HOSTS, now=NOW)
    assert "not signed by ca.crt" in " ".join(certs.problems(
        certs.CertBundle(a.ca_crt, a.ca_key, other.tls_crt, other.tls_key), HOSTS, now=NOW)[0])
    assert "tls.key does not match" in " ".join(certs.problems(
        certs.CertBundle(a.ca_crt, a.ca_key, a.tls_crt, other.tls_key), HOSTS, now=NOW)[0])
    assert certs.problems(certs.CertBundle(a.ca_crt, other.ca_key, a.tls_crt, a.tls_key), HOSTS,
                          now=NOW)[0] == ["ca.key does not match ca.crt"]
    assert "does not name 198.18.0.1" in " ".join(certs.problems(a, HOSTS + ["198.18.0.1"], now=NOW)[0])
    assert "does not parse" in certs.problems(certs.CertBundle(b"junk", a.ca_key, a.tls_crt, a.tls_key),
                                              HOSTS, now=NOW)[0][0]
    with pytest.raises(ValueError, match="missing keys tls.key"):
        certs.CertBundle.from_secret_data({"ca.crt": b"x", "ca.key": b"x", "tls.crt": b"x"})


def test_deploy_manifests_are_rendered_from_the_code():
    on_disk = {d["kind"]: d for p in sorted((REPO / "deploy" / "webhook").glob("*.yaml"))
               for d in yaml.safe_load_all(p.read_text())}
    assert on_disk["ValidatingWebhookConfiguration"] == validating_webhook_configuration(), \
        "deploy/webhook is stale: run `python -m controller.webhook`"
    assert on_disk["Service"] == webhook_service()


def test_webhook_configuration_as_metallb():
    vwc = validating_webhook_configuration()
    paths = {w["clientConfig"]["service"]["path"] for w in vwc["webhooks"]}
    assert {"/validate-metallb-io-v1beta2-bgppeer", "/validate-metallb-io-v1beta1-ipaddresspool",
            "/validate-metallb-io-v1beta1-l2advertisement", "/validate-metallb-io-v1beta1-bgpadvertisement",
            "/validate-metallb-io-v1beta1-community", "/validate-metallb-io-v1beta1-bfdprofile"} <= paths
    for w in vwc["webhooks"]:
        # the MetalLB CR's own webhook is served by the controller the operator creates from it
        want = "Ignore" if w["name"] == "metallbvalidationwebhook.metallb.io" else "Fail"
        assert w["failurePolicy"] == want and w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"]
        # the API server defaults scope; without it every re-apply rewrote the rules
        assert all(r["scope"] == "*" for r in w["rules"]), w["rules"]
    bfd = next(w for w in vwc["webhooks"] if w["name"].startswith("bfdprofile"))
    assert bfd["rules"][0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    url_form = validating_webhook_configuration(url="https://127.0.0.1:9443/", ca_bundle=b"PEM")
    assert url_form["webhooks"][0]["clientConfig"] == {"url": "https://127.0.0.1:9443/validate-metallb-io-v1beta2-bgppeer",
                                                       "caBundle": "UEVN"}
    assert len({e.path for e in ENDPOINTS}) == len(ENDPOINTS)


def test_kinds_read_per_decision():
    assert kinds_to_read("BFDProfile", "DELETE") == {"BGPPeer"}
    assert kinds_to_read("IPAddressPool", "DELETE") == set()
    assert kinds_to_read("BGPAdvertisement", "CREATE") >= {"BGPAdvertisement", "IPAddressPool", "Community"}


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"kind": "ConversionReview"}'])
def test_bad_conversion_requests(body):
    with pytest.raises(BadRequest):
        handle_conversion(body)
