"""metalxdp.kube.RestClient (the agent's client: no kubernetes package) against the real
kube-apiserver: credentials from a kubeconfig (token, token file, CA verification), errors as
ApiError with the server's status and message, the write layer and an Informer's list+watch
over it."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest
import urllib3
import yaml

from metalxdp.kube import (ApiError, KubeconfigError, RestClient, call_json, get_json, get_or_create,
                           replace_custom_status, rest_client)
from metalxdp.kube_target import Target
from metalxdp.rig.apiserver import ADMIN_TOKEN
from metalxdp.watch import Informer


def write_kubeconfig(path, server: str, cluster: dict, user: dict) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "cl", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "cl", "user": "u"}}]}))
    return str(path)


def test_the_rigs_kubeconfig_reaches_the_server_and_errors_carry_status_and_message(apiserver, k8s_namespace):
    api = rest_client(str(apiserver.kubeconfig))
    ns = k8s_namespace
    coll = f"/api/v1/namespaces/{ns}/configmaps"
    made = call_json(api, "POST", coll, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert made["metadata"]["namespace"] == ns and made["data"] == {"k": "v"}
    with pytest.raises(ApiError) as e:
        call_json(api, "POST", coll, {"metadata": {"name": "a"}})
    assert e.value.status == 409 and '"a" already exists' in str(e.value)
    with pytest.raises(ApiError) as e:
        call_json(api, "POST", coll, {"metadata": {"name": "Not_A_Name"}})
    assert e.value.status == 422 and "Not_A_Name" in str(e.value)
    assert get_json(api, f"{coll}/missing") is None
    obj, created = get_or_create(lambda: call_json(api, "GET", f"{coll}/b"),
                                 lambda: call_json(api, "POST", coll, {"metadata": {"name": "b"}}))
    assert created and obj["metadata"]["name"] == "b"
    listed = call_json(api, "GET", coll, query=[("fieldSelector", "metadata.name=b")])
    assert [o["metadata"]["name"] for o in listed["items"]] == ["b"]
    call_json(api, "DELETE", f"{coll}/b")
    assert get_json(api, f"{coll}/b") is None


def test_a_custom_objects_status_is_written_through_the_rest_client(apiserver, crds_installed, k8s_namespace):
    api = rest_client(str(apiserver.kubeconfig))
    body = {"apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": "s1", "namespace": k8s_namespace}}
    status = {"node": "node-a", "serviceName": "web", "serviceNamespace": k8s_namespace, "interfaces": [{"name": ""}]}
    written = replace_custom_status(api, "metallb.io", "v1beta1", k8s_namespace, "servicel2statuses", "s1",
                                    status, create=body)
    assert written["status"] == status
    assert replace_custom_status(api, "metallb.io", "v1beta1", k8s_namespace, "servicel2statuses", "s1",
                                 status) is None   # already so: nothing written


def test_a_wrong_token_is_a_401_not_a_hang(apiserver, tmp_path):
    kc = write_kubeconfig(tmp_path / "kc", apiserver.url, {"insecure-skip-tls-verify": True}, {"token": "wrong"})
    with pytest.raises(ApiError) as e:
        call_json(rest_client(kc), "GET", "/api/v1/namespaces")
    assert e.value.status == 401


def test_a_rotated_token_file_is_read_again(apiserver, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("stale-token\n")
    kc = write_kubeconfig(tmp_path / "kc", apiserver.url, {"insecure-skip-tls-verify": True}, {"tokenFile": "token"})
    api = rest_client(kc)
    with pytest.raises(ApiError) as e:
        call_json(api, "GET", "/api/v1/namespaces")
    assert e.value.status == 401
    tok.write_text(ADMIN_TOKEN + "\n")       # the kubelet rotated it
    with pytest.raises(ApiError):            # the stale one is kept until the refresh is due
        call_json(api, "GET", "/api/v1/namespaces")
    api.TOKEN_REFRESH = 0
    assert call_json(api, "GET", "/api/v1/namespaces")["kind"] == "NamespaceList"


def test_the_servers_certificate_is_verified_against_the_kubeconfigs_ca(apiserver, tmp_path):
    """The serving certificate kube-apiserver made for itself (cert-dir) as the CA, by a path
    relative to the kubeconfig: accepted; another CA: refused by TLS, never silently insecure."""
    served = apiserver.workdir / "certs" / "apiserver.crt"
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(served.read_bytes())
    good = write_kubeconfig(tmp_path / "good", apiserver.url, {"certificate-authority": "pki/ca.crt"},
                            {"token": ADMIN_TOKEN})
    assert call_json(rest_client(good), "GET", "/version")["major"] == "1"
    other = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "o.key"),
                    "-out", str(other), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    bad = write_kubeconfig(tmp_path / "bad", apiserver.url, {"certificate-authority": str(other)},
                           {"token": ADMIN_TOKEN})
    with pytest.raises(urllib3.exceptions.MaxRetryError) as e:
        call_json(rest_client(bad), "GET", "/version")
    assert isinstance(e.value.reason, urllib3.exceptions.SSLError)
    assert "certificate verify failed" in str(e.value.reason)


def test_an_exec_plugin_kubeconfig_is_refused_with_the_reason(tmp_path):
    kc = write_kubeconfig(tmp_path / "kc", "https://192.0.2.10:6443", {}, {"exec": {"command": "get-token"}})
    with pytest.raises(KubeconfigError, match="authenticates with 'exec'"):
        rest_client(kc)


def test_an_informer_lists_and_watches_over_the_rest_client(apiserver, k8s_namespace):
    api = rest_client(str(apiserver.kubeconfig))
    coll = f"/api/v1/namespaces/{k8s_namespace}/configmaps"
    call_json(api, "POST", coll, {"metadata": {"name": "before"}})
    seen, cond = [], threading.Condition()

    def handler(typ, obj):
        with cond:
            seen.append((typ, obj["metadata"]["name"]))
            cond.notify_all()

    def wait_for(event):
        with cond:
            assert cond.wait_for(lambda: event in seen, timeout=30), (event, seen)

    inf = Informer(api, coll, handler, field_selector="metadata.name!=kube-root-ca.crt").start()
    try:
        assert inf.wait_synced(30)
        wait_for(("ADDED", "before"))
        call_json(api, "POST", coll, {"metadata": {"name": "after"}})
        wait_for(("ADDED", "after"))
        call_json(api, "DELETE", f"{coll}/before")
        wait_for(("DELETED", "before"))
        assert sorted(o["metadata"]["name"] for o in inf.items()) == ["after"]
    finally:
        inf.stop()


def test_a_silent_watch_connection_ends_by_its_read_timeout():
    """A server that accepts and never answers: the request ends by the client's read timeout
    (a watch's is its timeoutSeconds + 60 s), it does not hang forever."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    api = RestClient(Target("http", "127.0.0.1", srv.getsockname()[1]))
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        api.request("GET", "/api/v1/services", timeout=(2, 1), stream=True)
    assert time.monotonic() - t0 < 10
    srv.close()
