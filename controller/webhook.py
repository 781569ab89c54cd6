"""The validating admission webhook and the BGPPeer conversion webhook, served over HTTPS by the
controller process, with their own certificate management (MetalLB's cert-controller rotator).

``start_webhook(api, namespace, host, port, url=None)`` returns at once with a ``WebhookServer``:

* an HTTPS server (stdlib ``http.server``, one thread per connection) answering
  ``POST /validate-metallb-io-<version>-<kind>`` (AdmissionReview v1 -> ``admission.review`` over
  the metallb.io objects *now* stored in ``namespace``, listed through the API server for every
  request: a decision never rests on a stale cache), ``POST /convert`` (ConversionReview ->
  ``bgppeer_conversion.conversion_review``), ``GET /healthz`` (the process serves) and
  ``GET /readyz`` (200 only once the certificate is served AND its CA is injected everywhere,
  i.e. once the API server can actually call us). TLS 1.2+ only. Nothing is allowed unchecked and
  no client input gets a 500: a review that cannot be validated (unknown operation, wrong kind,
  non-object object) is denied with code 400, one that cannot be decided because the API server
  cannot be read with code 503 and the cause; a body that is no review gets HTTP 400 (413 over
  ``MAX_BODY``) - the table is in docs/webhook.md, "Answers, status codes and limits";
* a certificate thread (``CertManager``): reads Secret ``metallb-webhook-cert``; when it is
  missing, invalid, or expires within 30 days, makes a new one (keeping the CA when the CA is
  still good, so the ``caBundle`` does not change) and stores it, tolerating a racing replica
  (on conflict it re-reads and serves the winner's); creates the ValidatingWebhookConfiguration
  when it is missing; injects the CA as ``caBundle`` into every webhook of it and into the
  BGPPeer CRD's conversion webhook; swaps the serving certificate without a restart. It re-checks
  every ``METALXDP_WEBHOOK_CERT_CHECK_SECONDS`` (default 60): a deleted Secret, a re-applied
  webhook configuration without ``caBundle`` or another replica's rotation are repaired within
  one interval.

With ``url`` (the lab: the API server runs on the host, not in a cluster) every ``clientConfig``
becomes ``url + path`` instead of the in-cluster Service, and the serving certificate also names
the URL's host.

``python -m controller.webhook`` regenerates ``deploy/webhook/*.yaml`` from the tables below.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from metalxdp import log as mlog
from metalxdp.config import admission
from metalxdp.config.bgppeer_conversion import conversion_review
from metalxdp.kube import ApiException, call_json, client, get_json, get_or_create, update_with_retry

from . import certs

log = mlog.get_logger("webhook")

GROUP = "metallb.io"
SECRET_NAME = "metallb-webhook-cert"
CONFIGURATION_NAME = "metallb-webhook-configuration"
SERVICE_NAME = certs.SERVICE_NAME
SERVICE_PORT = 443
TARGET_PORT = 9443
CONVERT_PATH = "/convert"
BGPPEER_CRD = "bgppeers.metallb.io"
CHECK_SECONDS_ENV = "METALXDP_WEBHOOK_CERT_CHECK_SECONDS"
ROTATE_BEFORE_DAYS_ENV = "METALXDP_WEBHOOK_CERT_ROTATE_BEFORE_DAYS"
DEFAULT_CHECK_SECONDS = 60.0
# after a CA change the API server must see the new caBundle before we serve a certificate
# signed by the new CA; its webhook-configuration informer usually takes milliseconds
CA_PROPAGATION_SECONDS = 1.0
# MetalLB's timeoutSeconds; a decision lists ~4 kinds through the API server (a few ms each)
TIMEOUT_SECONDS = 10
# reading the stored configuration may take this long per decision; the rest of TIMEOUT_SECONDS
# is for validating (a 10,000-CIDR pool: ~0.2 s) and answering, so the API server gets our
# denial naming the cause instead of its own "context deadline exceeded"
READ_BUDGET_SECONDS = 6.0
_ATTEMPTS = 4  # urllib3's default: one attempt and 3 retries
# controller-runtime's maxRequestSize: an UPDATE review carries two objects of up to etcd's
# 1.5 MiB each, plus the envelope; larger bodies get 413 without being read
MAX_BODY = 7 * 1024 * 1024
# nesting of arrays/objects a request may have; AdmissionReview > request > object > spec > ...
# with managedFields is ~20 deep for our kinds
MAX_JSON_DEPTH = 100
OPERATIONS = ("CREATE", "UPDATE", "DELETE")  # CONNECT never reaches a metallb.io webhook


@dataclass(frozen=True)
class Endpoint:
    """One validating webhook: which kind, at which version, for which operations."""
    kind: str
    version: str
    plural: str
    operations: tuple[str, ...]
    name: str  # MetalLB's webhook name, so `kubectl` errors read the same
    failure_policy: str = "Fail"

    @property
    def path(self) -> str:
        return f"/validate-metallb-io-{self.version}-{self.kind.lower()}"


# MetalLB's config/webhook/manifests.yaml, plus the legacy AddressPool and the operator's MetalLB
# CR (admission.review checks both). BGPPeer is validated at v1beta2: a v1beta1 request is
# converted first (matchPolicy Equivalent), so one code path sees every peer.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("BGPPeer", "v1beta2", "bgppeers", ("CREATE", "UPDATE"), "bgppeervalidationwebhook.metallb.io"),
    # MetalLB validates BFDProfile CREATE and DELETE only; UPDATE too, so that an edit the parser
    # refuses (echoMode: true, say) is denied at once instead of making the configuration stale
    Endpoint("BFDProfile", "v1beta1", "bfdprofiles", ("CREATE", "UPDATE", "DELETE"),
             "bfdprofilevalidationwebhook.metallb.io"),
    Endpoint("BGPAdvertisement", "v1beta1", "bgpadvertisements", ("CREATE", "UPDATE"),
             "bgpadvertisementvalidationwebhook.metallb.io"),
    Endpoint("Community", "v1beta1", "communities", ("CREATE", "UPDATE"), "communityvalidationwebhook.metallb.io"),
    Endpoint("IPAddressPool", "v1beta1", "ipaddresspools", ("CREATE", "UPDATE"),
             "ipaddresspoolvalidationwebhook.metallb.io"),
    Endpoint("L2Advertisement", "v1beta1", "l2advertisements", ("CREATE", "UPDATE"),
             "l2advertisementvalidationwebhook.metallb.io"),
    Endpoint("AddressPool", "v1beta1", "addresspools", ("CREATE", "UPDATE"),
             "addresspoolvalidationwebhook.metallb.io"),
    # Ignore, not Fail: the controller serving this webhook is the one the operator creates FROM
    # the MetalLB CR, so with Fail the CR could never be created while the webhook is installed
    # and no controller runs (the operator path's first apply, or again after the CR was deleted:
    # "connection refused", found by the e2e operator test). The operator still reports a CR it
    # cannot render (condition Degraded, SyncFailed).
    Endpoint("MetalLB", "v1beta1", "metallbs", ("CREATE", "UPDATE"), "metallbvalidationwebhook.metallb.io",
             failure_policy="Ignore"),
)
BY_PATH = {e.path: e for e in ENDPOINTS}
BY_KIND = {e.kind: e for e in ENDPOINTS}
# kinds that decide on a peer's or advertisement's nodes (MetalLB lists Nodes for them)
_NODE_KINDS = {"BGPPeer", "BGPAdvertisement", "L2Advertisement"}
# kinds whose rules resolve serviceAllocation.namespaceSelectors (MetalLB lists Namespaces for them)
_POOL_KINDS = {"IPAddressPool", "AddressPool"}


# ---------------------------------------------------------------------------------------------
# manifests

def _client_config(namespace: str, path: str, url: Optional[str], ca_bundle: Optional[bytes]) -> dict:
    cc: dict = ({"url": url.rstrip("/") + path} if url else
                {"service": {"name": SERVICE_NAME, "namespace": namespace, "path": path, "port": SERVICE_PORT}})
    if ca_bundle:
        cc["caBundle"] = base64.b64encode(ca_bundle).decode()
    return cc


def validating_webhook_configuration(namespace: str = "metallb-system", url: Optional[str] = None,
                                     ca_bundle: Optional[bytes] = None) -> dict:
    """The ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1, Kubernetes >= 1.16)."""
    webhooks = []
    for e in ENDPOINTS:
        webhooks.append({
            "name": e.name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": _client_config(namespace, e.path, url, ca_bundle),
            # Fail: an object the controller would refuse must never be stored unchecked (but
            # the MetalLB CR itself, see ENDPOINTS)
            "failurePolicy": e.failure_policy,
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            # scope spelled out: the API server defaults it, and a rule without it made every
            # re-apply of deploy/ "configure" the webhook (the rules list is replaced whole)
            "rules": [{"apiGroups": [GROUP], "apiVersions": [e.version], "operations": list(e.operations),
                       "resources": [e.plural], "scope": "*"}],
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME, "labels": {"app.kubernetes.io/name": "metalxdp"}},
            "webhooks": webhooks}


def webhook_service(namespace: str = "metallb-system") -> dict:
    """The Service the API server reaches the webhook through (443 -> the controller's 9443)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "metalxdp"}},
            "spec": {"selector": {"app": "metallb", "component": "controller"},
                     "ports": [{"name": "webhook", "port": SERVICE_PORT, "targetPort": TARGET_PORT,
                                "protocol": "TCP"}]}}


# ---------------------------------------------------------------------------------------------
# reading the current configuration

class ClusterReadError(Exception):
    """The API server could not be read, so a decision cannot be made (the request is denied)."""

    def __init__(self, what: str, cause: str):
        super().__init__(f"reading {what} failed: {cause}")
        self.what, self.cause = what, cause


def _cause(e: BaseException) -> str:
    """A short, user-facing reason for a failed API call: HTTP status and the API server's message,
    or the connection error without urllib3's object reprs."""
    if isinstance(e, ApiException):
        message = ""
        try:
            message = str((json.loads(e.body or "{}") or {}).get("message") or "")
        except (ValueError, AttributeError):
            pass
        return f"HTTP {e.status} {e.reason}" + (f": {message[:300]}" if message else "")
    reason = getattr(e, "reason", None)  # urllib3's MaxRetryError wraps the real error
    root = reason if isinstance(reason, BaseException) else e
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", str(root)).strip(" ()'\"")
    return f"{type(root).__name__}: {text}"[:300] if text else type(root).__name__


class ClusterReader:
    """The metallb.io objects, Nodes and Namespaces as the API server has them now. Every call
    raises ClusterReadError (never anything else) and stays within ``budget`` seconds per
    decision, so the API server (which waits TIMEOUT_SECONDS for us) gets our answer, not a
    timeout."""

    def __init__(self, api: client.ApiClient, namespace: str, budget: float = READ_BUDGET_SECONDS):
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.budget = budget

    def _call(self, what: str, deadline: float, fn: Callable[..., Any], *args: Any, missing_ok: bool = False) -> Any:
        """``fn(*args)`` within the deadline; None for a 404 when ``missing_ok``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClusterReadError(what, f"no answer within {self.budget:g} s")
        # urllib3 applies a timeout to each attempt and retries up to 3 times (the kubernetes
        # client sets no retries of its own): split what is left between the attempts. A float
        # would be ignored by the client (it takes an int or a (connect, read) pair).
        attempt = left / _ATTEMPTS
        try:
            return fn(*args, _request_timeout=(attempt, attempt))
        except Exception as e:  # whatever the failure, we cannot decide
            if missing_ok and isinstance(e, ApiException) and e.status == 404:
                return None
            raise ClusterReadError(what, _cause(e)) from e

    def read(self, plan: "ReadPlan") -> "ClusterView":
        deadline = time.monotonic() + self.budget
        objects: list[dict] = []
        for kind in sorted(plan.kinds):
            e = BY_KIND[kind]
            listed = self._call(f"{e.plural}.{GROUP}", deadline, self.custom.list_namespaced_custom_object,
                                GROUP, e.version, self.namespace, e.plural, missing_ok=True)
            if listed is None:  # that CRD is not installed: no such objects
                continue
            items = listed["items"]
            for o in items:  # list items carry no apiVersion/kind in some API server versions
                o.setdefault("apiVersion", f"{GROUP}/{e.version}")
                o.setdefault("kind", kind)
            objects += items
        nodes = namespaces = None
        if plan.nodes:
            items = self._call("nodes", deadline, self.core.list_node).items
            # no Node at all: every peer is assumed to share a node, as MetalLB's config.For
            nodes = {n.metadata.name: dict(n.metadata.labels or {}) for n in items} or None
        if plan.namespaces:
            items = self._call("namespaces", deadline, self.core.list_namespace).items
            namespaces = {n.metadata.name: dict(n.metadata.labels or {}) for n in items}
        return ClusterView(objects, nodes, namespaces)


@dataclass(frozen=True)
class ReadPlan:
    """What one decision reads from the API server: stored kinds, Nodes, Namespaces."""
    kinds: frozenset[str]
    nodes: bool
    namespaces: bool


@dataclass(frozen=True)
class ClusterView:
    objects: list[dict]
    nodes: Optional[dict[str, dict[str, str]]]        # None: not read, or the cluster has no Node
    namespaces: Optional[dict[str, dict[str, str]]]   # None: not read


def kinds_to_read(kind: str, operation: str) -> set[str]:
    """The stored kinds admission.review needs to decide on ``kind``/``operation``."""
    if operation == "DELETE":
        return {"BGPPeer"} if kind == "BFDProfile" else set()
    return set(admission.SCOPE.get(kind, set())) | {kind}


def read_plan(kind: str, operation: str) -> ReadPlan:
    """Only what the rule for ``kind``/``operation`` needs: a DELETE is decided on the stored
    peers alone (BFDProfile) or on nothing, so it reads no Node and no Namespace."""
    deciding = operation != "DELETE"
    return ReadPlan(frozenset(kinds_to_read(kind, operation)), nodes=deciding and kind in _NODE_KINDS,
                    namespaces=deciding and kind in _POOL_KINDS)


# ---------------------------------------------------------------------------------------------
# AdmissionReview handling (no HTTP here)

class BadRequest(ValueError):
    """The body is not a request we can answer at all: HTTP ``status`` (400) with the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


_REASONS = {400: "BadRequest", 403: "Forbidden", 503: "ServiceUnavailable"}


def _review_response(uid: str, allowed: bool, message: str = "", warnings: Optional[list[str]] = None,
                     code: int = 403) -> dict:
    resp: dict = {"uid": uid, "allowed": allowed}
    if not allowed:
        resp["status"] = {"code": code, "message": message, "reason": _REASONS.get(code, "InternalError")}
    if warnings:
        resp["warnings"] = list(warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__)


def _too_deep(value: Any, limit: int) -> bool:
    """More than ``limit`` nested arrays/objects (iterative: the check itself cannot recurse)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        if depth > limit:
            return True
        stack += [(c, depth + 1) for c in children if isinstance(c, (dict, list))]
    return False


def decode_json(body: bytes) -> Any:
    """The request body as JSON, or BadRequest: empty, not JSON, or nested deeper than
    MAX_JSON_DEPTH (every object we validate is far shallower; deeper input would only exercise
    recursion limits further down)."""
    if not body:
        raise BadRequest("request body is empty")
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadRequest(f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # includes UnicodeDecodeError and Python's 4300-digit integer limit
        raise BadRequest(f"body is not JSON: {e}") from None
    if isinstance(value, (dict, list)) and _too_deep(value, MAX_JSON_DEPTH):
        raise BadRequest(f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _request_problem(endpoint: Endpoint, req: dict) -> Optional[str]:
    """Why this AdmissionRequest cannot be validated at all (controller-runtime answers these with
    code 400: a wrong kind, an unknown operation, an object that does not decode), or None."""
    kind = req.get("kind") if isinstance(req.get("kind"), dict) else {}
    req_kind, group = kind.get("kind"), kind.get("group", GROUP)
    if req_kind != endpoint.kind or group != GROUP:
        got = "no kind" if not req_kind else str(req_kind) if group == GROUP else f"{group}/{req_kind}"
        return (f"{endpoint.path} validates {endpoint.kind} objects, got {got}: "
                f"the webhook configuration's rules are wrong")
    operation = req.get("operation")
    if operation not in OPERATIONS:
        what = "no request.operation" if operation in (None, "") else f"unknown operation {operation!r}"
        return f"{what}: expected one of {', '.join(OPERATIONS)}"
    # the object being written (CREATE, UPDATE), the stored one (UPDATE, DELETE: oldObject)
    fields = {"CREATE": ("object",), "UPDATE": ("object", "oldObject"), "DELETE": ("oldObject",)}[operation]
    for field_name in fields:
        o = req.get(field_name)
        if not isinstance(o, dict):
            return f"{operation} needs request.{field_name} to be a Kubernetes object, got {_type_name(o)}"
        if "metadata" in o and not isinstance(o["metadata"], dict):
            return f"request.{field_name}.metadata must be an object, got {_type_name(o['metadata'])}"
    return None


def _name(o: Any) -> Optional[str]:
    meta = o.get("metadata") if isinstance(o, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def handle_admission(endpoint: Endpoint, body: bytes, reader: ClusterReader) -> dict:
    """AdmissionReview bytes -> AdmissionReview response dict. Never allows what it did not check:

    * BadRequest (HTTP 400) when the body is no AdmissionReview with a request.uid: there is no
      uid to answer to;
    * denied with code 400 (HTTP 200, as controller-runtime's ``Errored(400)``) when the review
      cannot be validated: another AdmissionReview version, a wrong kind, a missing or unknown
      operation, an object or oldObject that is not an object;
    * denied with code 503 naming the cause when the API server could not be read;
    * otherwise ``admission.review``'s decision (code 403 when denied)."""
    review = decode_json(body)
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise BadRequest("expected an admission.k8s.io/v1 AdmissionReview")
    req = review.get("request")
    if not isinstance(req, dict) or not isinstance(req.get("uid"), str) or not req["uid"]:
        raise BadRequest("AdmissionReview has no request.uid")
    uid = req["uid"]
    if review.get("apiVersion") != "admission.k8s.io/v1":
        problem: Optional[str] = (f"unsupported AdmissionReview version {review.get('apiVersion')!r}; "
                                  f"register the webhook with admissionReviewVersions [v1]")
    else:
        problem = _request_problem(endpoint, req)
    if problem:
        log.warning("admission request cannot be validated", event="webhookBadRequest", kind=endpoint.kind,
                    uid=uid, error=problem)
        return _review_response(uid, False, problem, code=400)
    operation = req["operation"]
    obj = req.get("object") if isinstance(req.get("object"), dict) else None
    old = req.get("oldObject") if isinstance(req.get("oldObject"), dict) else None
    name = _name(obj or old)
    try:
        view = reader.read(read_plan(endpoint.kind, operation))
    except ClusterReadError as e:
        log.error("cannot read the current configuration", event="webhookError", kind=endpoint.kind,
                  operation=operation, name=name, error=str(e))
        return _review_response(uid, False, f"{endpoint.kind}/{name or '?'} was not validated, so it is refused: "
                                            f"the metalxdp webhook could not read the current configuration "
                                            f"from the API server ({e}); retry once the controller can reach "
                                            f"the API server", code=503)
    allowed, message, warnings = admission.review(endpoint.kind, operation, obj, old, view.objects,
                                                  namespace=reader.namespace, nodes=view.nodes,
                                                  namespaces=view.namespaces)
    # refusals at info (a user will ask why); acceptances only at debug (one per apply)
    (log.debug if allowed else log.info)("admission", event="webhookDecision", kind=endpoint.kind,
                                         operation=operation, name=name, allowed=allowed,
                                         message=message or None, warnings=warnings or None)
    return _review_response(uid, allowed, message, warnings)


def handle_conversion(body: bytes) -> dict:
    """ConversionReview bytes -> ConversionReview response dict; BadRequest (HTTP 400, as
    controller-runtime's conversion webhook) when the body is no v1 ConversionReview with a uid,
    a desiredAPIVersion and a list of objects. An object that cannot be converted gives a
    response with result Failure (the API server reports its message)."""
    review = decode_json(body)
    if (not isinstance(review, dict) or review.get("kind") != "ConversionReview"
            or not isinstance(review.get("request"), dict)):
        raise BadRequest("expected an apiextensions.k8s.io/v1 ConversionReview with a request")
    if review.get("apiVersion") != "apiextensions.k8s.io/v1":
        raise BadRequest(f"unsupported ConversionReview version {review.get('apiVersion')!r}; "
                         f"the CRD must list conversionReviewVersions [v1]")
    req = review["request"]
    if not isinstance(req.get("uid"), str) or not req["uid"]:
        raise BadRequest("ConversionReview has no request.uid")
    if not isinstance(req.get("desiredAPIVersion"), str):
        raise BadRequest(f"request.desiredAPIVersion must be a string, got {_type_name(req.get('desiredAPIVersion'))}")
    if not isinstance(req.get("objects"), list):
        raise BadRequest(f"request.objects must be an array, got {_type_name(req.get('objects'))}")
    return conversion_review(review)


# ---------------------------------------------------------------------------------------------
# HTTPS server

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the API server reuses its connections
    timeout = 30                  # a silent client never holds a thread for long
    server: "_HTTPSServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http " + format % args)

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else (
            json.dumps(payload).encode() if content_type == "application/json" else str(payload).encode())
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, "ok\n", "text/plain")
        elif path == "/readyz":
            ready, why = self.server.webhook.readiness()
            self._send(200 if ready else 503, ("ok" if ready else why) + "\n", "text/plain")
        else:
            self._send(404, f"no such path {path}; POST /validate-..., POST /convert, GET /healthz, /readyz\n",
                       "text/plain")

    def _refuse(self, status: int, message: str, path: str, close: bool = False) -> None:
        log.warning("bad webhook request", event="webhookBadRequest", path=path, status=status, error=message)
        if close:  # the body was not read: the connection cannot carry another request
            self.close_connection = True
        self._send(status, {"error": message})

    def do_POST(self) -> None:  # noqa: N802
        """HTTP 400/413 with {"error": ...} for a body we cannot read as a review (as
        controller-runtime, which answers 400 for a body it cannot decode), 404 for an unknown
        path, otherwise 200 with the review's response. Never 500 for anything a client sends: a
        500 is a bug (logged with its traceback)."""
        path = urlsplit(self.path).path
        if path != CONVERT_PATH and path not in BY_PATH:
            self._refuse(404, f"no webhook at {path}; known: {sorted(BY_PATH)} and {CONVERT_PATH}", path, close=True)
            return
        if self.headers.get("Transfer-Encoding"):
            self._refuse(400, "chunked bodies are not accepted: send Content-Length", path, close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, f"invalid Content-Length {self.headers.get('Content-Length')!r}", path, close=True)
            return
        if length > MAX_BODY:
            self._refuse(413, f"request entity is too large; limit is {MAX_BODY} bytes", path, close=True)
            return
        body = self.rfile.read(length)
        if "Content-Length" not in self.headers:  # whatever was sent is not a body we can delimit
            self.close_connection = True
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._refuse(400, f"contentType={content_type or 'none'}, expected application/json", path)
            return
        try:
            if path == CONVERT_PATH:
                out = handle_conversion(body)
            else:
                out = handle_admission(BY_PATH[path], body, self.server.webhook.reader)
        except BadRequest as e:
            self._refuse(e.status, str(e), path)
            return
        except Exception as e:  # a bug: never let one request take the server down; tell the caller
            log.error("webhook request failed", exc_info=True, event="webhookError", path=path)
            self._send(500, {"error": f"internal error: {type(e).__name__}"})
            return
        self._send(200, out)


class _HTTPSServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that wraps every accepted connection with the *current* SSL
    context, so a rotated certificate is served from the next connection on, without a restart.
    The TLS handshake runs in the connection's own thread (a slow client does not block accept)."""
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], webhook: "WebhookServer"):
        self.webhook = webhook
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        ctx = self.webhook.ssl_context
        if ctx is None:  # no certificate yet: nothing we could say to a TLS client
            sock.close()
            raise OSError("no serving certificate yet")
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        # TLS failures (a client that does not trust us yet, a port scanner) end up here
        import sys
        log.debug("connection error", peer=str(client_address), error=repr(sys.exc_info()[1]))


def _ssl_context(bundle: certs.CertBundle) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain only reads files: write them to a private temporary directory
    with tempfile.TemporaryDirectory(prefix="metalxdp-webhook-") as d:
        crt, key = Path(d, "tls.crt"), Path(d, "tls.key")
        crt.write_bytes(bundle.tls_crt)
        key.touch(mode=0o600)
        key.write_bytes(bundle.tls_key)
        ctx.load_cert_chain(crt, key)
    return ctx


# ---------------------------------------------------------------------------------------------
# certificates in the cluster

def _b64(data: Optional[dict], key: str) -> bytes:
    v = (data or {}).get(key)
    try:
        return base64.b64decode(v) if v else b""
    except ValueError:
        return b""


class CertManager:
    """Keeps Secret ``metallb-webhook-cert`` valid and its CA injected (MetalLB's cert rotator)."""

    def __init__(self, api: client.ApiClient, namespace: str, hosts: list[str], url: Optional[str],
                 rotate_before: dt.timedelta = certs.DEFAULT_ROTATE_BEFORE):
        self.namespace = namespace
        self.hosts = hosts
        self.url = url
        self.rotate_before = rotate_before
        self.core = client.CoreV1Api(api)
        self.admreg = client.AdmissionregistrationV1Api(api)
        self.api = api

    # -- the Secret -------------------------------------------------------------------------
    def _read_secret(self):
        try:
            return self.core.read_namespaced_secret(SECRET_NAME, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _bundle_of(self, secret) -> Optional[certs.CertBundle]:
        if secret is None:
            return None
        try:
            return certs.CertBundle.from_secret_data({k: _b64(secret.data, k) for k in certs.SECRET_KEYS})
        except ValueError:
            return None

    def ensure_secret(self) -> tuple[certs.CertBundle, bool]:
        """The bundle to serve, and whether this call wrote a new one. Two replicas may race:
        whoever loses the create/update (409) re-reads and takes the winner's bundle."""
        for _ in range(5):
            secret = self._read_secret()
            bundle = self._bundle_of(secret)
            if bundle is not None:
                why, ca = certs.problems(bundle, self.hosts, self.rotate_before)
                if not why:
                    return bundle, False
            else:
                why, ca = ([f"Secret {self.namespace}/{SECRET_NAME} " +
                            ("does not exist" if secret is None else "lacks ca.crt/ca.key/tls.crt/tls.key")], None)
            new = certs.generate(self.namespace, self.hosts, ca=ca)
            data = {k: base64.b64encode(v).decode() for k, v in new.as_secret_data().items()}
            log.info("issuing webhook certificate", event="certRotation", reasons=why, keep_ca=ca is not None,
                     expires=new.serving_not_after().isoformat())
            try:
                if secret is None:
                    body = client.V1Secret(metadata=client.V1ObjectMeta(
                        name=SECRET_NAME, namespace=self.namespace, labels={"app.kubernetes.io/name": "metalxdp"}),
                        type="kubernetes.io/tls", data=data)
                    self.core.create_namespaced_secret(self.namespace, body)
                else:
                    # type is immutable: keep whatever the Secret was created with
                    secret.data = dict(secret.data or {}, **data)
                    self.core.replace_namespaced_secret(SECRET_NAME, self.namespace, secret)
                return new, True
            except ApiException as e:
                if e.status != 409:
                    raise
                log.info("another replica wrote the webhook certificate first: using it", event="certRace")
        raise RuntimeError(f"Secret {self.namespace}/{SECRET_NAME} keeps changing under us")

    # -- injection --------------------------------------------------------------------------
    def inject(self, ca_bundle: bytes) -> None:
        """Create the ValidatingWebhookConfiguration if missing; set every webhook's caBundle
        (and URL form) and the BGPPeer CRD's conversion caBundle (and URL form)."""
        self._inject_vwc(ca_bundle)
        self._inject_crd(ca_bundle)

    def _inject_vwc(self, ca_bundle: bytes) -> None:
        want = validating_webhook_configuration(self.namespace, self.url, ca_bundle)
        path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{CONFIGURATION_NAME}"
        wanted_cc = {w["name"]: w["clientConfig"] for w in want["webhooks"]}
        b64 = base64.b64encode(ca_bundle).decode()

        def current() -> Optional[dict]:
            cur, created = get_or_create(lambda: call_json(self.api, "GET", path),
                                         lambda: self.admreg.create_validating_webhook_configuration(want))
            if created:
                log.info("created the webhook configuration", event="webhookConfigCreated",
                         name=CONFIGURATION_NAME, url=self.url)
                return None
            return cur

        def change(cur: Optional[dict]) -> Optional[dict]:
            if cur is None:
                return None
            changed = False
            for w in cur.get("webhooks") or []:
                cc = w.get("clientConfig") or {}
                target = wanted_cc.get(w.get("name"))
                if self.url and target is not None and cc.get("url") != target["url"]:
                    cc.pop("service", None)
                    cc["url"] = target["url"]
                    changed = True
                if cc.get("caBundle") != b64:
                    cc["caBundle"] = b64
                    changed = True
                w["clientConfig"] = cc
            return cur if changed else None

        if update_with_retry(current, change, lambda cur: call_json(self.api, "PUT", path, cur),
                             what=CONFIGURATION_NAME) is not None:
            log.info("injected caBundle into the webhook configuration", event="caBundleInjected",
                     name=CONFIGURATION_NAME)

    def _inject_crd(self, ca_bundle: bytes) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{BGPPEER_CRD}"
        b64 = base64.b64encode(ca_bundle).decode()

        def current() -> Optional[dict]:
            cur = get_json(self.api, path)
            if cur is None:
                log.warning("BGPPeer CRD not installed: no conversion webhook to inject", event="crdMissing")
            return cur

        def change(cur: Optional[dict]) -> Optional[dict]:
            conv = ((cur or {}).get("spec") or {}).get("conversion") or {}
            if conv.get("strategy") != "Webhook":
                return None  # no CRD, or installed with --conversion none: nothing calls us
            cc = conv.setdefault("webhook", {}).setdefault("clientConfig", {})
            conv["webhook"].setdefault("conversionReviewVersions", ["v1"])
            changed = False
            if self.url and cc.get("url") != self.url.rstrip("/") + CONVERT_PATH:
                cc.pop("service", None)
                cc["url"] = self.url.rstrip("/") + CONVERT_PATH
                changed = True
            if cc.get("caBundle") != b64:
                cc["caBundle"] = b64
                changed = True
            return cur if changed else None

        # raw JSON (call_json), not the generated models: they drop fields they do not know and
        # choke on some CRD schemas (x-kubernetes-int-or-string); a read-modify-write must keep everything
        if update_with_retry(current, change, lambda cur: call_json(self.api, "PUT", path, cur),
                             what=f"CRD {BGPPEER_CRD}") is not None:
            log.info("injected caBundle into the BGPPeer conversion webhook", event="caBundleInjected",
                     name=BGPPEER_CRD)


# ---------------------------------------------------------------------------------------------
# the whole thing

class WebhookServer:
    """Handle returned by ``start_webhook``: the HTTPS server and the certificate thread."""

    def __init__(self, api: client.ApiClient, namespace: str, host: str, port: int, url: Optional[str] = None,
                 check_seconds: Optional[float] = None, rotate_before: Optional[dt.timedelta] = None):
        self.namespace = namespace
        self.url = url
        self.reader = ClusterReader(api, namespace)
        hosts = certs.dns_names(namespace) + ["127.0.0.1"]
        if url and urlsplit(url).hostname:
            hosts.append(urlsplit(url).hostname)
        self.check_seconds = check_seconds if check_seconds is not None else float(
            os.environ.get(CHECK_SECONDS_ENV) or DEFAULT_CHECK_SECONDS)
        if rotate_before is None:
            rotate_before = dt.timedelta(days=float(os.environ.get(ROTATE_BEFORE_DAYS_ENV) or
                                                    certs.DEFAULT_ROTATE_BEFORE.days))
        self.certs = CertManager(api, namespace, list(dict.fromkeys(hosts)), url, rotate_before)
        self.ssl_context: Optional[ssl.SSLContext] = None
        self.serving: Optional[certs.CertBundle] = None
        self._injected = False
        self._last_error_type = ""  # of the last failed certificate check, for /readyz
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.httpd = _HTTPSServer((host, port), self)  # binds now: a busy port fails the start
        self.port = self.httpd.server_address[1]
        self._threads = [threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                          name="webhook-https", daemon=True),
                         threading.Thread(target=self._cert_loop, name="webhook-certs", daemon=True)]

    def start(self) -> "WebhookServer":
        for t in self._threads:
            t.start()
        log.info("webhook listening", event="webhookStarted", port=self.port, url=self.url,
                 check_seconds=self.check_seconds)
        return self

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not). ``why`` is served on /readyz to anyone who can connect, so it names
        the state and the error's type only; the error itself is in the certError log event."""
        failed = f" (last check: {self._last_error_type}; see the certError log)" if self._last_error_type else ""
        if self.ssl_context is None:
            return False, "no serving certificate yet" + failed
        if not self._injected:
            return False, "caBundle not injected yet" + failed
        return True, ""

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def check_now(self) -> None:
        """Run the certificate check at once (rotation, re-injection) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---------------------------------------------------------------------------------------
    def check_once(self) -> None:
        """One rotation check: make sure the Secret holds a good bundle, inject its CA, serve it."""
        bundle, _wrote = self.certs.ensure_secret()
        if self.serving is not None and bundle == self.serving:
            self.certs.inject(bundle.ca_crt)  # repairs a re-applied/edited configuration
            self._injected = True
            return
        if self.serving is None:
            # first certificate: serve it before registering it, so the API server never calls
            # a port that has no certificate yet (the configuration may be created just now)
            self._serve(bundle)
            self.certs.inject(bundle.ca_crt)
        elif bundle.ca_crt != self.serving.ca_crt:
            # trust both CAs until the next check, then only the new one: a replica that still
            # serves the old certificate (it re-reads the Secret at its own next check) keeps
            # working meanwhile
            self.certs.inject(bundle.ca_crt + self.serving.ca_crt)
            time.sleep(CA_PROPAGATION_SECONDS)
            self._serve(bundle)
        else:  # same CA, new serving certificate: the caBundle already trusts it
            self.certs.inject(bundle.ca_crt)
            self._serve(bundle)
        self._injected = True

    def _serve(self, bundle: certs.CertBundle) -> None:
        self.ssl_context = _ssl_context(bundle)
        self.serving = bundle
        log.info("serving webhook certificate", event="certServed", serial=f"{bundle.serial():x}",
                 expires=bundle.serving_not_after().isoformat())

    def _cert_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.check_once()
                self._last_error_type = ""
                backoff = 1.0
                if not self.ready.is_set():
                    self.ready.set()
                    log.info("webhook ready: certificate served and caBundle injected", event="webhookReady")
                wait = self.check_seconds
            except Exception as e:  # the API server may be down: retry, keep serving what we have
                self._last_error_type = type(e).__name__
                log.error("webhook certificate check failed", event="certError",
                          error=f"{type(e).__name__}: {getattr(e, 'reason', None) or e}")
                wait = backoff
                backoff = min(backoff * 2, 30.0)
            self._wake.wait(wait)
            self._wake.clear()


def start_webhook(api: client.ApiClient, namespace: str, host: str, port: int,
                  url: Optional[str] = None) -> WebhookServer:
    """Start serving (non-blocking). ``handle.wait_ready(t)`` waits for certificate + caBundle."""
    return WebhookServer(api, namespace, host, port, url).start()


# ---------------------------------------------------------------------------------------------
# manifests on disk

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "webhook"


def render_manifests(out_dir: Path = DEPLOY_DIR) -> list[Path]:
    import yaml
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "# Generated by `python -m controller.webhook`; the controller injects caBundle at runtime.\n"
    files = {"validatingwebhookconfiguration.yaml": validating_webhook_configuration(),
             "service.yaml": webhook_service()}
    paths = []
    for name, obj in files.items():
        p = out_dir / name
        p.write_text(header + yaml.safe_dump(obj, sort_keys=False))
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in render_manifests():
        print(p)
