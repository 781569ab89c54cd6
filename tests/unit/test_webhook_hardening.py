"""The webhook's HTTPS request handling, case by case: whatever a client sends, the answer is a
clear 400/413/404 or a denial - never an allow of something unchecked, never a 500.

The real ``WebhookServer`` HTTPS server answers on 127.0.0.1 with a freshly issued certificate
(no certificate thread). Its ``ClusterReader`` is real too; it talks to a small in-process HTTP
server standing in for the API server's list endpoints, which records what a decision reads and
can refuse (403), hang, or not exist (a closed port). The real API server path is
tests/integration/test_webhook.py.
"""
from __future__ import annotations

import copy
import http.client
import http.server
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import certs
from controller.webhook import (BY_KIND, CONVERT_PATH, MAX_BODY, MAX_JSON_DEPTH, BadRequest, ClusterReader,
                                ClusterView, ReadPlan, WebhookServer, _ssl_context, handle_admission, read_plan)
from metalxdp.kube import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "config"))
from cases import bfd, peer, pool  # noqa: E402

NS = "metallb-system"
POOLS = BY_KIND["IPAddressPool"].path
BFD = BY_KIND["BFDProfile"].path
TOKEN = "s3cr3t-bearer-token-for-the-test"  # must never appear in an answer


# ---------------------------------------------------------------------------------------------
# a stand-in for the API server's list endpoints

@dataclass
class FakeAPI:
    """Answers GET lists from ``objects`` (plural -> items); ``status`` != 200 answers every
    request with that code and a metav1.Status; ``hang`` never answers."""
    objects: dict[str, list] = field(default_factory=dict)
    status: int = 200
    hang: bool = False
    paths: list[str] = field(default_factory=list)

    def answer(self, path: str) -> tuple[int, dict]:
        self.paths.append(path)
        if self.status != 200:
            return self.status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self.status,
                                 "reason": "Forbidden",
                                 "message": f"{path.rsplit('/', 1)[-1]} is forbidden: User \"system:serviceaccount:"
                                            f"metallb-system:controller\" cannot list resource"}
        plural = path.rstrip("/").rsplit("/", 1)[-1]
        kind = {"nodes": "NodeList", "namespaces": "NamespaceList"}.get(plural, "List")
        return 200, {"kind": kind, "apiVersion": "v1", "metadata": {}, "items": self.objects.get(plural, [])}


class _FakeAPIHandler(http.server.BaseHTTPRequestHandler):
    server: "_FakeAPIServer"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        api = self.server.api
        if api.hang:
            api.paths.append(self.path)
            time.sleep(5)
            return
        code, body = api.answer(self.path.split("?")[0])
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _FakeAPIServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeAPI):
        self.api = api
        super().__init__(("127.0.0.1", 0), _FakeAPIHandler)


def _api_client(port: int) -> client.ApiClient:
    conf = client.Configuration(host=f"http://127.0.0.1:{port}")
    conf.api_key = {"authorization": f"Bearer {TOKEN}"}
    return client.ApiClient(conf)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def fake_api():
    api = FakeAPI()
    srv = _FakeAPIServer(api)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield api, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------------------------------------
# the webhook

@dataclass
class Hook:
    server: WebhookServer
    bundle: certs.CertBundle
    api: FakeAPI
    api_port: int

    def use_reader(self, port: Optional[int] = None, budget: float = 6.0) -> None:
        self.server.reader = ClusterReader(_api_client(port or self.api_port), NS, budget=budget)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.bundle.ca_crt.decode())

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[dict] = None,
                ) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=self.context(), timeout=20)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if headers is None else headers)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def hook(fake_api):
    api, port = fake_api
    bundle = certs.generate(NS, certs.dns_names(NS) + ["127.0.0.1"])
    ws = WebhookServer(_api_client(port), NS, "127.0.0.1", 0)
    ws.ssl_context = _ssl_context(bundle)  # what the certificate thread would do; it is not started
    threading.Thread(target=ws.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield Hook(ws, bundle, api, port)
    ws.httpd.shutdown()
    ws.httpd.server_close()


@pytest.fixture
def fresh(hook):
    """A clean API server state and a reader pointed at it."""
    hook.api.objects, hook.api.status, hook.api.hang = {}, 200, False
    hook.api.paths.clear()
    hook.use_reader()
    return hook


def review(operation: Any = "CREATE", obj: Any = None, old: Any = None, kind: Any = "IPAddressPool",
           version: str = "admission.k8s.io/v1", drop: tuple = (), **request: Any) -> bytes:
    req = {"uid": "u-1", "kind": {"group": "metallb.io", "version": "v1beta1", "kind": kind},
           "operation": operation, "object": obj, "oldObject": old, **request}
    for k in drop:
        req.pop(k)
    return json.dumps({"apiVersion": version, "kind": "AdmissionReview", "request": req}).encode()


def conversion(**request: Any) -> bytes:
    req = {"uid": "c-1", "desiredAPIVersion": "metallb.io/v1beta1", "objects": [], **request}
    return json.dumps({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                       "request": req}).encode()


def _pool(name: str = "a", *addresses: str) -> dict:
    return pool(name, *(addresses or ("198.51.100.0/25",)))


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_object(depth: int) -> dict:
    o = _pool()
    inner: dict = {}
    o["spec"]["serviceAllocation"] = inner
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    return o


# ---------------------------------------------------------------------------------------------
# the table: (id, path, body, headers, HTTP status, review code (None: no review), message part)

@dataclass(frozen=True)
class Row:
    id: str
    path: str
    body: bytes
    status: int
    code: Optional[int]
    message: str
    headers: Optional[dict] = None


OK = None  # an allowed review: HTTP 200, no status
ROWS = [
    # bodies that are not a review with a uid: HTTP 400 with {"error": ...} (nothing to answer to)
    Row("empty-body", POOLS, b"", 400, None, "request body is empty"),
    Row("not-json", POOLS, b"{not json", 400, None, "body is not JSON"),
    Row("not-utf8", POOLS, b'{"kind": "\xff"}', 400, None, "body is not JSON"),
    Row("huge-integer", POOLS, b'{"kind": ' + b"9" * 5000 + b"}", 400, None, "body is not JSON"),
    Row("json-array", POOLS, b"[1, 2]", 400, None, "expected an admission.k8s.io/v1 AdmissionReview"),
    Row("other-kind-of-review", POOLS, b'{"kind": "ConversionReview"}', 400, None, "AdmissionReview"),
    Row("no-request", POOLS, b'{"kind": "AdmissionReview"}', 400, None, "request.uid"),
    Row("uid-not-a-string", POOLS, json.dumps({"kind": "AdmissionReview", "request": {"uid": 5}}).encode(),
        400, None, "request.uid"),
    Row("deep-json-recursion-limit", POOLS, _nested(100_000), 400, None, "nested deeper than"),
    Row("deep-json-over-the-bound", POOLS, review(obj=_deep_object(MAX_JSON_DEPTH)), 400, None,
        "nested deeper than"),
    Row("wrong-content-type", POOLS, review(obj=_pool()), 400, None, "expected application/json",
        headers={"Content-Type": "text/plain"}),
    Row("unknown-path", "/validate-nothing", b"{}", 404, None, "no webhook at /validate-nothing"),
    # reviews that cannot be validated: denied with code 400 (controller-runtime's Errored(400))
    Row("operation-missing", POOLS, review(obj=_pool(), drop=("operation",)), 200, 400, "no request.operation"),
    Row("operation-empty", POOLS, review(operation="", obj=_pool()), 200, 400, "no request.operation"),
    Row("operation-bogus", POOLS, review(operation="DESTROY", obj=_pool()), 200, 400,
        "unknown operation 'DESTROY': expected one of CREATE, UPDATE, DELETE"),
    Row("operation-lowercase", POOLS, review(operation="create", obj=_pool()), 200, 400, "unknown operation 'create'"),
    Row("operation-connect", POOLS, review(operation="CONNECT", obj=_pool()), 200, 400, "unknown operation 'CONNECT'"),
    Row("operation-not-a-string", POOLS, review(operation=["CREATE"], obj=_pool()), 200, 400, "unknown operation"),
    Row("wrong-kind", POOLS, review(kind="BGPPeer", obj=peer("x")), 200, 400,
        "validates IPAddressPool objects, got BGPPeer:"),
    Row("no-kind", POOLS, review(kind=None, obj=_pool()), 200, 400, "got no kind"),
    Row("kind-of-another-group", POOLS,
        review(obj=_pool()).replace(b'"group": "metallb.io"', b'"group": "example.com"'), 200, 400,
        "got example.com/IPAddressPool"),
    Row("object-missing", POOLS, review(drop=("object",)), 200, 400, "CREATE needs request.object to be a "
                                                                      "Kubernetes object, got null"),
    Row("object-a-string", POOLS, review(obj="pool"), 200, 400, "got string"),
    Row("object-a-list", POOLS, review(obj=[_pool()]), 200, 400, "got array"),
    Row("update-without-old-object", POOLS, review(operation="UPDATE", obj=_pool()), 200, 400,
        "UPDATE needs request.oldObject"),
    Row("delete-without-old-object", BFD, review(operation="DELETE", kind="BFDProfile"), 200, 400,
        "DELETE needs request.oldObject"),
    Row("metadata-a-string", POOLS, review(obj={**_pool(), "metadata": "a"}), 200, 400,
        "request.object.metadata must be an object, got string"),
    Row("old-metadata-a-number", POOLS, review(operation="UPDATE", obj=_pool(), old={**_pool(), "metadata": 5}),
        200, 400, "request.oldObject.metadata must be an object, got number"),
    Row("admissionreview-v1beta1", POOLS, review(obj=_pool(), version="admission.k8s.io/v1beta1"), 200, 400,
        "unsupported AdmissionReview version"),
    # decided by the parser
    Row("valid-pool", POOLS, review(obj=_pool()), 200, OK, ""),
    Row("invalid-pool", POOLS, review(obj=_pool("a", "198.51.100.0/33")), 200, 403, "spec.addresses[0]"),
    Row("spec-a-string", POOLS, review(obj={**_pool(), "spec": "x"}), 200, 403, "IPAddressPool/a: spec"),
    Row("deep-json-within-the-bound", POOLS, review(obj=_deep_object(MAX_JSON_DEPTH - 10)), 200, OK, ""),
    # the conversion webhook: a body that is not a ConversionReview -> 400; a bad object -> Failure
    Row("convert-objects-a-number", CONVERT_PATH, conversion(objects=5), 400, None,
        "request.objects must be an array, got number"),
    Row("convert-no-uid", CONVERT_PATH, conversion(uid=""), 400, None, "ConversionReview has no request.uid"),
    Row("convert-desired-version-missing", CONVERT_PATH, conversion(desiredAPIVersion=None), 400, None,
        "request.desiredAPIVersion must be a string, got null"),
    Row("convert-v1beta1-review", CONVERT_PATH,
        conversion().replace(b"apiextensions.k8s.io/v1", b"apiextensions.k8s.io/v1beta1"), 400, None,
        "unsupported ConversionReview version"),
    Row("convert-deep-json", CONVERT_PATH, _nested(5000), 400, None, "nested deeper than"),
    Row("convert-not-json", CONVERT_PATH, b"{", 400, None, "body is not JSON"),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_request_table(fresh, row: Row):
    status, body = fresh.request("POST", row.path, row.body, headers=row.headers)
    assert status == row.status, body
    answer = json.loads(body)
    if row.status != 200:
        assert row.message in answer["error"]
        return
    response = answer["response"]
    assert response["uid"] == "u-1"
    if row.code is OK:
        assert response == {"uid": "u-1", "allowed": True}
        return
    assert response["allowed"] is False
    assert response["status"]["code"] == row.code
    assert response["status"]["reason"] == {400: "BadRequest", 403: "Forbidden"}[row.code]
    assert row.message in response["status"]["message"]


def test_conversion_of_a_malformed_object_is_a_failure_result(fresh):
    status, body = fresh.request("POST", CONVERT_PATH, conversion(objects=[5, {"kind": "BGPPeer", "metadata": "x"}]))
    assert status == 200
    response = json.loads(body)["response"]
    assert response["uid"] == "c-1" and response["result"]["status"] == "Failure"
    assert response["convertedObjects"] == []
    ok = peer("p")
    status, body = fresh.request("POST", CONVERT_PATH, conversion(objects=[ok]))
    response = json.loads(body)["response"]
    assert status == 200 and response["result"] == {"status": "Success"}
    assert response["convertedObjects"][0]["apiVersion"] == "metallb.io/v1beta1"


def _raw(hook: Hook, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers) and ``body`` as they are; the answer."""
    with socket.create_connection(("127.0.0.1", hook.server.port), timeout=20) as sock:
        with hook.context().wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(head + b"\r\n" + body)
            r = http.client.HTTPResponse(tls)
            r.begin()
            return r.status, r.read()


def test_a_body_over_the_limit_gets_413_without_being_read(fresh):
    head = (f"POST {POOLS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n").encode()
    t0 = time.monotonic()
    status, body = _raw(fresh, head, b"{")  # the rest of the announced body never comes
    assert status == 413 and f"limit is {MAX_BODY} bytes".encode() in body
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("headers, message", [
    ("Content-Length: nine\r\n", b"invalid Content-Length"),
    ("Transfer-Encoding: chunked\r\n", b"send Content-Length"),
])
def test_unreadable_lengths_get_400(fresh, headers, message):
    head = f"POST {POOLS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}".encode()
    status, body = _raw(fresh, head, b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 400 and message in body


def test_the_server_keeps_serving_after_every_bad_request(fresh):
    for row in ROWS:
        fresh.request("POST", row.path, row.body, headers=row.headers)
    status, body = fresh.request("POST", POOLS, review(obj=_pool()))
    assert status == 200 and json.loads(body)["response"]["allowed"] is True


# ---------------------------------------------------------------------------------------------
# overlap checks and the cluster's objects

def test_overlap_is_denied_with_the_parser_message(fresh):
    fresh.api.objects = {"ipaddresspools": [_pool("a", "198.51.100.0/24")]}
    status, body = fresh.request("POST", POOLS, review(obj=_pool("b", "198.51.100.128/25")))
    status_ = json.loads(body)["response"]["status"]
    assert status == 200 and status_["code"] == 403
    assert status_["message"] == ("IPAddressPool/b: spec.addresses[0]: CIDR 198.51.100.128/25 in pool 'b' overlaps "
                                  "with already defined CIDR 198.51.100.0/24 (pool 'a'); address ranges of pools "
                                  "must not overlap")


def test_a_10000_cidr_pool_is_admitted_in_well_under_the_timeout(fresh):
    base = int(ipaddress.ip_address("198.18.0.0"))
    big = pool("big", *(f"{ipaddress.ip_address(base + i)}/32" for i in range(10_000)))
    fresh.api.objects = {"ipaddresspools": [_pool("a", "198.51.100.0/24")]}
    t0 = time.monotonic()
    status, body = fresh.request("POST", POOLS, review(obj=big))
    elapsed = time.monotonic() - t0
    assert status == 200 and json.loads(body)["response"] == {"uid": "u-1", "allowed": True}
    assert elapsed < 5.0  # 115 s before the O(n log n) checks; ~0.3 s on an idle machine


# ---------------------------------------------------------------------------------------------
# what a decision reads

LIST_PREFIX = f"/apis/metallb.io/v1beta1/namespaces/{NS}/"


def test_read_plans():
    assert read_plan("IPAddressPool", "DELETE") == ReadPlan(frozenset(), nodes=False, namespaces=False)
    assert read_plan("BFDProfile", "DELETE") == ReadPlan(frozenset({"BGPPeer"}), nodes=False, namespaces=False)
    assert read_plan("BGPPeer", "DELETE") == ReadPlan(frozenset(), nodes=False, namespaces=False)
    assert read_plan("IPAddressPool", "CREATE") == ReadPlan(frozenset({"IPAddressPool", "AddressPool"}),
                                                            nodes=False, namespaces=True)
    assert read_plan("BGPPeer", "UPDATE") == ReadPlan(frozenset({"BGPPeer", "BFDProfile"}), nodes=True,
                                                      namespaces=False)


def test_delete_reads_only_what_its_rule_needs(fresh):
    status, body = fresh.request("POST", POOLS, review(operation="DELETE", old=_pool()))
    assert status == 200 and json.loads(body)["response"]["allowed"] is True
    assert fresh.api.paths == []
    fresh.api.objects = {"bgppeers": [peer("p1", bfdProfile="fast")]}
    status, body = fresh.request("POST", BFD, review(operation="DELETE", kind="BFDProfile", old=bfd("fast")))
    response = json.loads(body)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "used by BGPPeer p1" in response["status"]["message"]
    assert fresh.api.paths == [f"/apis/metallb.io/v1beta2/namespaces/{NS}/bgppeers"]


def test_create_reads_the_kinds_that_rule_and_namespaces(fresh):
    fresh.request("POST", POOLS, review(obj=_pool()))
    assert sorted(fresh.api.paths) == sorted([LIST_PREFIX + "addresspools", LIST_PREFIX + "ipaddresspools",
                                              "/api/v1/namespaces"])


# ---------------------------------------------------------------------------------------------
# the API server cannot be read: a denial naming the cause (503), never a 500 or an allow

def _denial(hook: Hook, body: bytes) -> dict:
    status, answer = hook.request("POST", POOLS if b'"IPAddressPool"' in body else BFD, body)
    assert status == 200, answer
    response = json.loads(answer)["response"]
    assert response["allowed"] is False, response
    assert TOKEN not in answer.decode()
    return response["status"]


def test_unreachable_api_server_denies_naming_the_cause(fresh):
    fresh.use_reader(port=_closed_port())
    status = _denial(fresh, review(obj=_pool()))
    assert status["code"] == 503 and status["reason"] == "ServiceUnavailable"
    assert status["message"].startswith("IPAddressPool/a was not validated, so it is refused: the metalxdp webhook "
                                        "could not read the current configuration from the API server")
    assert "Connection refused" in status["message"]
    assert "object at 0x" not in status["message"]
    # a DELETE that needs nothing from the API server still gets its answer
    status_, body = fresh.request("POST", POOLS, review(operation="DELETE", old=_pool()))
    assert json.loads(body)["response"]["allowed"] is True
    assert "bgppeers.metallb.io" in _denial(fresh, review(operation="DELETE", kind="BFDProfile", old=bfd("f")))["message"]


def test_forbidden_list_denies_with_the_api_servers_message(fresh):
    fresh.api.status = 403
    status = _denial(fresh, review(obj=_pool()))
    assert status["code"] == 503
    assert "reading addresspools.metallb.io failed: HTTP 403 Forbidden: addresspools is forbidden" in status["message"]


def test_a_hanging_api_server_is_given_up_within_the_budget(fresh):
    fresh.api.hang = True
    fresh.use_reader(budget=1.0)
    t0 = time.monotonic()
    status = _denial(fresh, review(obj=_pool()))
    assert time.monotonic() - t0 < 3.0  # urllib3's retries included: the API server waits 10 s
    assert status["code"] == 503 and "ReadTimeoutError" in status["message"]


# ---------------------------------------------------------------------------------------------
# TLS 1.2+ only; health endpoints tell no secret

def _client(version: ssl.TLSVersion, ca: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.decode())
    ctx.minimum_version = ctx.maximum_version = version
    # OpenSSL 3 refuses TLS < 1.2 at its default security level even as a client; level 0 lets
    # this client really offer TLS 1.1, so a failed handshake is the server's refusal
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_and_1_2_accepted(hook):
    tls11 = _client(ssl.TLSVersion.TLSv1_1, hook.bundle.ca_crt)
    with pytest.raises(ssl.SSLError):
        _handshake(hook.server.port, tls11)
    assert _handshake(hook.server.port, _client(ssl.TLSVersion.TLSv1_2, hook.bundle.ca_crt)) == "TLSv1.2"
    assert _handshake(hook.server.port, hook.context()) == "TLSv1.3"
    # control: the same TLS 1.1 client completes a handshake with a server that allows it
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(*_pem_files(hook.bundle))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            with permissive.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        assert _handshake(listener.getsockname()[1], tls11) == "TLSv1.1"
        t.join(5)


def _pem_files(bundle: certs.CertBundle) -> tuple[str, str]:
    import tempfile
    d = tempfile.mkdtemp(prefix="metalxdp-test-")
    Path(d, "tls.crt").write_bytes(bundle.tls_crt)
    Path(d, "tls.key").write_bytes(bundle.tls_key)
    return str(Path(d, "tls.crt")), str(Path(d, "tls.key"))


def test_health_endpoints_name_no_secret_and_no_error_detail(hook):
    """/readyz is answered to anyone who can connect: it names the state and the error's type,
    not the error text (which can carry the API server's address, a URL, an object's content)."""
    ws = WebhookServer(_api_client(_closed_port()), NS, "127.0.0.1", 0, check_seconds=0.2)
    ws.ssl_context = hook.server.ssl_context
    ws.start()  # the certificate check runs against a closed port and fails
    try:
        deadline = time.monotonic() + 20
        while not ws._last_error_type and time.monotonic() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPSConnection("127.0.0.1", ws.port, context=hook.context(), timeout=10)
        answers = {}
        for path in ("/readyz", "/healthz", "/nothing"):
            conn.request("GET", path)
            r = conn.getresponse()
            answers[path] = (r.status, r.read().decode())
        conn.close()
    finally:
        ws.stop()
    assert answers["/readyz"] == (503, "caBundle not injected yet (last check: MaxRetryError; "
                                       "see the certError log)\n")
    assert answers["/healthz"] == (200, "ok\n")
    assert answers["/nothing"][0] == 404
    text = "".join(body for _, body in answers.values())
    for secret in (TOKEN, hook.bundle.tls_key.decode(), hook.bundle.ca_key.decode(), "PRIVATE KEY", "127.0.0.1:"):
        assert secret not in text


# ---------------------------------------------------------------------------------------------
# property: whatever the review holds, the answer is a BadRequest or a response - and an allow
# only for a request that was really validated

class _Stored:
    """The stored configuration, from memory (the HTTP path is covered above)."""
    namespace = NS

    def read(self, plan: ReadPlan) -> ClusterView:
        return ClusterView([_pool("stored", "203.0.113.0/24")], None, {})


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)
_BASE = json.loads(review(obj=_pool("p", "198.51.100.0/24"), old=_pool("p", "198.51.100.0/24")))
_PATHS = [("apiVersion",), ("kind",), ("request",), ("request", "uid"), ("request", "kind"),
          ("request", "kind", "kind"), ("request", "kind", "group"), ("request", "operation"),
          ("request", "object"), ("request", "oldObject"), ("request", "object", "metadata"),
          ("request", "object", "spec"), ("request", "object", "metadata", "name"),
          ("request", "object", "metadata", "namespace"), ("request", "object", "spec", "addresses")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _JSON | st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
                max_size=4))
def test_any_review_is_answered_and_only_validated_requests_allowed(changes):
    body = copy.deepcopy(_BASE)
    for path, value in changes:
        target = body
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[path[-1]] = value
    try:
        answer = handle_admission(BY_KIND["IPAddressPool"], json.dumps(body).encode(), _Stored())
    except BadRequest:
        return
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"] and isinstance(response["allowed"], bool)
    if response["allowed"]:
        req = body["request"]
        assert body["apiVersion"] == "admission.k8s.io/v1" and req["kind"]["kind"] == "IPAddressPool"
        assert req["operation"] in ("CREATE", "UPDATE", "DELETE")
        assert isinstance(req["oldObject" if req["operation"] == "DELETE" else "object"], dict)
    else:
        assert response["status"]["code"] in (400, 403) and response["status"]["message"]
