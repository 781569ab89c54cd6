"""metalxdp.kube_target: a kubeconfig document or a pod's environment -> where the API server is
and how to authenticate (pure; tables)."""
from __future__ import annotations

import base64

import pytest

from metalxdp.kube_target import KubeconfigError, Target, from_kubeconfig, in_cluster, parse_server

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(PEM).decode()

SERVERS = [  # (server, (scheme, host, port) or error fragment)
    ("https://192.0.2.10:6443", ("https", "192.0.2.10", 6443)),
    ("https://192.0.2.10", ("https", "192.0.2.10", 443)),
    ("http://127.0.0.1:8001", ("http", "127.0.0.1", 8001)),
    ("http://localhost", ("http", "localhost", 80)),
    ("https://[2001:db8::1]:6443", ("https", "2001:db8::1", 6443)),
    ("https://[2001:db8::1]", ("https", "2001:db8::1", 443)),
    ("https://api.example.test:6443/", ("https", "api.example.test", 6443)),
    ("192.0.2.10:6443", "want https://"),
    ("ftp://192.0.2.10", "want https://"),
    ("https://:6443", "no host"),
    ("https://192.0.2.10:http", "bad port"),
    ("https://192.0.2.10:70000", "out of range"),
    ("https://192.0.2.10:6443/k8s/clusters/c-1", "a path after the host"),
    ("https://[2001:db8::1]x", "bad IPv6"),
]


@pytest.mark.parametrize("server,want", SERVERS, ids=[s for s, _ in SERVERS])
def test_parse_server(server, want):
    if isinstance(want, str):
        with pytest.raises(KubeconfigError, match=want):
            parse_server(server)
    else:
        assert parse_server(server) == want


def kubeconfig(cluster: dict, user: dict, current: str = "c") -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "cl", "cluster": {"server": "https://192.0.2.10:6443", **cluster}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "cl", "user": "u"}},
                         {"name": "other", "context": {"cluster": "cl", "user": "u"}}]}


BASE = dict(scheme="https", host="192.0.2.10", port=6443)
CONFIGS = [  # (description, cluster, user, Target or error fragment)
    ("token, insecure (the lab's)", {"insecure-skip-tls-verify": True}, {"token": "t0k"},
     Target(**BASE, insecure=True, token="t0k")),
    ("CA data and client certificate data", {"certificate-authority-data": B64},
     {"client-certificate-data": B64, "client-key-data": B64},
     Target(**BASE, ca_data=PEM, cert_data=PEM, key_data=PEM)),
    ("files, relative to the kubeconfig's directory", {"certificate-authority": "pki/ca.crt"},
     {"client-certificate": "/abs/c.crt", "client-key": "pki/c.key"},
     Target(**BASE, ca_file="/etc/kube/pki/ca.crt", cert_file="/abs/c.crt", key_file="/etc/kube/pki/c.key")),
    ("token file and tls-server-name", {"tls-server-name": "kubernetes.default"}, {"tokenFile": "tok"},
     Target(**BASE, tls_server_name="kubernetes.default", token_file="/etc/kube/tok")),
    ("no credentials at all (anonymous)", {}, {}, Target(**BASE)),
    ("exec plugin refused", {}, {"exec": {"command": "aws"}}, "authenticates with 'exec'"),
    ("auth-provider refused", {}, {"auth-provider": {"name": "oidc"}}, "authenticates with 'auth-provider'"),
    ("basic auth refused", {}, {"username": "a", "password": "b"}, "basic auth"),
    ("certificate without key", {}, {"client-certificate-data": B64}, "needs its key"),
    ("key without certificate", {}, {"client-key": "k"}, "needs its key"),
    ("CA data not base64", {"certificate-authority-data": "not base64!"}, {}, "not base64"),
    ("insecure and a CA", {"insecure-skip-tls-verify": True, "certificate-authority": "/ca"}, {}, "exclude each other"),
]


@pytest.mark.parametrize("desc,cluster,user,want", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_from_kubeconfig(desc, cluster, user, want):
    doc = kubeconfig(cluster, user)
    if isinstance(want, str):
        with pytest.raises(KubeconfigError, match=want):
            from_kubeconfig(doc, base_dir="/etc/kube")
    else:
        assert from_kubeconfig(doc, base_dir="/etc/kube") == want


BROKEN = [  # (description, document, context, error fragment)
    ("not a mapping", ["a"], None, "not a mapping"),
    ("empty", {}, None, "no current-context"),
    ("unknown context", kubeconfig({}, {}), "nope", "no contexts entry named 'nope'"),
    ("context names a missing cluster", {**kubeconfig({}, {}), "clusters": []}, None, "no clusters entry named 'cl'"),
    ("cluster entry without its mapping", {**kubeconfig({}, {}), "clusters": [{"name": "cl"}]}, None,
     "has no 'cluster' mapping"),
    ("no server", {**kubeconfig({}, {}), "clusters": [{"name": "cl", "cluster": {}}]}, None, "want https://"),
]


@pytest.mark.parametrize("desc,doc,context,want", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_kubeconfig_says_what_is_wrong(desc, doc, context, want):
    with pytest.raises(KubeconfigError, match=want):
        from_kubeconfig(doc, context=context)


def test_a_named_context_is_used_over_the_current_one():
    doc = kubeconfig({}, {"token": "t"}, current="missing")
    assert from_kubeconfig(doc, context="other").token == "t"


def test_target_url_brackets_ipv6():
    assert Target("https", "2001:db8::1", 6443).url == "https://[2001:db8::1]:6443"
    assert Target("https", "192.0.2.1", 443).url == "https://192.0.2.1:443"


IN_CLUSTER = [  # (env, Target or error fragment)
    ({"KUBERNETES_SERVICE_HOST": "198.18.0.1", "KUBERNETES_SERVICE_PORT": "443"},
     Target("https", "198.18.0.1", 443, ca_file="/sa/ca.crt", token_file="/sa/token")),
    ({"KUBERNETES_SERVICE_HOST": "2001:db8::1", "KUBERNETES_SERVICE_PORT": "6443"},
     Target("https", "2001:db8::1", 6443, ca_file="/sa/ca.crt", token_file="/sa/token")),
    ({}, "not in a pod"),
    ({"KUBERNETES_SERVICE_HOST": "198.18.0.1"}, "not in a pod"),
    ({"KUBERNETES_SERVICE_HOST": "198.18.0.1", "KUBERNETES_SERVICE_PORT": "https"}, "is not a port"),
]


@pytest.mark.parametrize("env,want", IN_CLUSTER, ids=[str(e) for e, _ in IN_CLUSTER])
def test_in_cluster(env, want):
    if isinstance(want, str):
        with pytest.raises(KubeconfigError, match=want):
            in_cluster(env, sa_dir="/sa")
    else:
        assert in_cluster(env, sa_dir="/sa") == want
