"""The one boundary to the Kubernetes API: every other module reaches Kubernetes through here.

Two clients, one write layer:

* ``RestClient`` (``rest_client(kubeconfig)``): plain JSON over urllib3, with a kubeconfig's or
  the pod's service-account credentials (metalxdp.kube_target). The agent, which runs on every
  node, uses only this: importing this module does not import the ``kubernetes`` package, whose
  generated models cost ~40 MB of RSS per process.
* the ``kubernetes`` client (``api_client``, ``client``, ``ApiException``, ``dynamic_client``,
  ``apply``), loaded on first use (metalxdp._kube_client): the controller, webhook, operator,
  CLI and lab, which also use its typed APIs.

The write layer takes either client (``request`` dispatches) and is shared by all of them:

* ``get_or_create(read, create)``: an object, created when missing (a lost create race reads
  the winner's);
* ``update_with_retry(read, change, write)``: read-modify-write, again on 409 Conflict;
* ``replace_custom_status(...)``: a custom object's status, by GET + PUT with conflict retry;
* ``call_json`` / ``get_json``: raw JSON requests, for read-modify-writes that must keep every
  field (the generated models drop fields they do not know);
* ``EventPoster``: core/v1 Events about Services, best effort, from a small pool of threads;
* ``apply(api, manifest)``: create or replace (the lab).

Errors: a RestClient raises ``ApiError``, the kubernetes client its ``ApiException``; both carry
``status``, ``reason`` and ``body``, and ``api_errors()`` is the tuple to catch for either.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union
from urllib.parse import urlencode

import urllib3

from .kube_target import KubeconfigError, Target, from_kubeconfig, in_cluster
from .log import get_logger

__all__ = ["client", "ApiException", "ApiError", "api_errors", "KubeconfigError", "RestClient", "rest_client",
           "request", "ConflictError", "api_client", "dynamic_client", "apply",
           "get_or_none", "get_or_create", "update_with_retry", "replace_custom_status", "call_json", "get_json",
           "service_event", "EventPoster"]

log = get_logger("kube")
T = TypeVar("T")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
_HEAVY = {"client", "ApiException", "api_client", "dynamic_client", "apply"}


def __getattr__(name: str):
    """The kubernetes-client names, imported on first use (PEP 562)."""
    if name in _HEAVY:
        from . import _kube_client
        return getattr(_kube_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ApiError(Exception):
    """The API server's error answer (HTTP status >= 400) to a RestClient request; ``status``,
    ``reason`` and ``body`` as on the kubernetes client's ApiException."""

    def __init__(self, status: int = 0, reason: str = "", body: Any = None, headers: Any = None):
        self.status, self.reason, self.body, self.headers = status, reason, body, headers
        detail = ""
        try:
            detail = json.loads(body).get("message", "") if body else ""
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace") if isinstance(body, bytes) else str(body or "")[:200]
        super().__init__(f"({status}) {reason}" + (f": {detail}" if detail else ""))


def api_errors() -> tuple:
    """The exception types an API error arrives as: ApiError, plus the kubernetes client's
    ApiException once that client is loaded (it is never loaded just to catch it)."""
    rest = sys.modules.get("kubernetes.client.exceptions")
    return (ApiError, rest.ApiException) if rest is not None else (ApiError,)


class ConflictError(RuntimeError):
    """An object kept changing under a read-modify-write (every attempt ended in 409)."""


# ---- the REST client ------------------------------------------------------------------------

Timeout = Union[float, tuple, None]


class RestClient:
    """Requests to one API server, plain JSON in and out, over a urllib3 connection pool (thread
    safe; a watch holds one connection while it streams). ``token_file`` is re-read once a
    minute, as client-go does, so a pod's rotated service-account token is picked up."""

    TOKEN_REFRESH = 60.0

    def __init__(self, target: Target, *, maxsize: int = 16):
        self.target = target
        self._token, self._token_read = target.token, 0.0
        self._token_lock = threading.Lock()
        kw: dict[str, Any] = {"maxsize": maxsize, "block": False,
                              # a refused connect is tried again (nothing was sent); anything
                              # after sending is not (a POST must not be made twice), nor TLS
                              "retries": urllib3.Retry(total=2, connect=2, read=False, redirect=0, status=0,
                                                       other=0)}
        if target.scheme == "https":
            kw["ssl_context"] = self._ssl_context(target)
            if target.insecure:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
            elif target.tls_server_name:
                kw.update(server_hostname=target.tls_server_name, assert_hostname=target.tls_server_name)
            self._pool = urllib3.HTTPSConnectionPool(target.host, target.port, **kw)
        else:
            self._pool = urllib3.HTTPConnectionPool(target.host, target.port, **kw)

    @staticmethod
    def _ssl_context(t: Target):
        import ssl
        ctx = ssl.create_default_context()
        if t.insecure:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        elif t.ca_data or t.ca_file:
            ctx = ssl.create_default_context(cafile=t.ca_file, cadata=t.ca_data.decode() if t.ca_data else None)
        if t.cert_data or t.cert_file:
            tmp = tempfile.mkdtemp(prefix="metalxdp-tls-")   # 0700: ssl loads a key only from a file
            try:
                cert, key = t.cert_file, t.key_file
                if t.cert_data:
                    cert = os.path.join(tmp, "cert.pem")
                    Path(cert).write_bytes(t.cert_data)
                if t.key_data:
                    key = os.path.join(tmp, "key.pem")
                    Path(key).write_bytes(t.key_data)
                ctx.load_cert_chain(cert, key)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return ctx

    def _bearer(self) -> Optional[str]:
        t = self.target
        if t.token_file:
            with self._token_lock:
                now = time.monotonic()
                if self._token is None or now - self._token_read >= self.TOKEN_REFRESH:
                    try:
                        self._token = Path(t.token_file).read_text().strip()
                        self._token_read = now
                    except OSError as e:
                        if self._token is None:
                            raise ApiError(0, f"token file {t.token_file} unreadable: {e}") from e
        return self._token

    def request(self, method: str, path: str, *, query: Optional[list] = None, body: Any = None,
                content_type: str = JSON, timeout: Timeout = 30, stream: bool = False):
        """One request; the urllib3 response (``stream``: body not read yet, release_conn() when
        done). Raises ApiError on an HTTP error status, urllib3's errors when there is no answer."""
        url = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": JSON}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if isinstance(timeout, tuple):
            to = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            to = urllib3.Timeout(connect=min(timeout, 10) if timeout else 10, read=timeout)
        # not a stream: the body is read into .data and the connection goes back to the pool
        resp = self._pool.urlopen(method, url, body=data, headers=headers, timeout=to,
                                  preload_content=not stream, decode_content=True)
        if resp.status >= 400:
            payload = resp.data
            resp.release_conn()
            raise ApiError(resp.status, resp.reason or "", payload, resp.headers)
        return resp


def rest_client(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> RestClient:
    """A RestClient from ``kubeconfig`` (or $KUBECONFIG), else the pod's service account.
    Raises KubeconfigError with what is missing or unsupported."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path:
        return RestClient(in_cluster(os.environ))
    import yaml
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KubeconfigError(f"kubeconfig {path}: {e}") from e
    return RestClient(from_kubeconfig(doc, base_dir=str(Path(path).resolve().parent), context=context))


def request(api, method: str, path: str, *, query: Optional[list] = None, body: Any = None,
            content_type: str = JSON, timeout: Timeout = 30, stream: bool = False):
    """One request through either client; the urllib3 response (``stream``: not read yet)."""
    if isinstance(api, RestClient):
        return api.request(method, path, query=query, body=body, content_type=content_type,
                           timeout=timeout, stream=stream)
    return api.call_api(path, method, query_params=query or [], body=body, auth_settings=["BearerToken"],
                        header_params={"Accept": JSON, "Content-Type": content_type},
                        _preload_content=False, _return_http_data_only=True, _request_timeout=timeout)


# ---- the write layer ----------------------------------------------------------------------

def get_or_none(read: Callable[[], T]) -> Optional[T]:
    """``read()``, or None when the object does not exist (404)."""
    try:
        return read()
    except api_errors() as e:
        if e.status != 404:
            raise
        return None


def get_or_create(read: Callable[[], T], create: Callable[[], T]) -> tuple[T, bool]:
    """``read()``, or ``create()`` when the object does not exist (404); a create that loses a race
    with another writer (409) reads the winner's object. Returns (object, created)."""
    try:
        return read(), False
    except api_errors() as e:
        if e.status != 404:
            raise
    try:
        return create(), True
    except api_errors() as e:
        if e.status != 409:
            raise
    return read(), False


def update_with_retry(read: Callable[[], Any], change: Callable[[Any], Any], write: Callable[[Any], T],
                      what: str, attempts: int = 5) -> Any:
    """Read-modify-write with the API server's optimistic concurrency: ``change(read())`` returns
    the object to ``write`` (carrying the resourceVersion read), or None when nothing needs
    writing. A 409 Conflict anywhere in an attempt (someone wrote in between, or won a create
    race) starts the next attempt from a fresh read. Returns what ``write`` returned, or None
    when nothing was written; raises ConflictError after ``attempts`` conflicts."""
    for _ in range(attempts):
        try:
            new = change(read())
            if new is None:
                return None
            return write(new)
        except api_errors() as e:
            if e.status != 409:
                raise
    raise ConflictError(f"{what} keeps changing under us")


def replace_custom_status(api, group: str, version: str, namespace: str, plural: str,
                          name: str, status: dict, *, create: Optional[dict] = None,
                          current: Optional[dict] = None, attempts: int = 5) -> Optional[dict]:
    """Make a namespaced custom object's status ``status``: GET + PUT of the status subresource,
    not PATCH (a merge patch would turn "" into null with some clients, which a schema with
    string fields refuses), again on 409. ``create``: the body to create the object from when it
    is missing; ``current``: an up-to-date copy the caller already has (saves the first GET).
    Returns the object written, or None when its status was already ``status``."""
    coll = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
    first = [current] if current is not None else []

    def read() -> dict:
        if first:
            return first.pop()
        get = lambda: call_json(api, "GET", f"{coll}/{name}")  # noqa: E731
        if create is None:
            return get()
        return get_or_create(get, lambda: call_json(api, "POST", coll, create))[0]

    def change(obj: dict) -> Optional[dict]:
        return None if obj.get("status") == status else {**obj, "status": status}

    return update_with_retry(read, change, lambda obj: call_json(api, "PUT", f"{coll}/{name}/status", obj),
                             what=f"{plural}/{namespace}/{name}", attempts=attempts)


def call_json(api, method: str, path: str, body: Any = None, *, query: Optional[list] = None,
              content_type: str = JSON, timeout: float = 30) -> dict:
    """One request with plain JSON in and out (no generated models: a read-modify-write keeps
    every field, also those the client does not know). Raises one of api_errors()."""
    data = request(api, method, path, query=query, body=body, content_type=content_type, timeout=timeout).data
    return json.loads(data) if data else {}


def get_json(api, path: str) -> Optional[dict]:
    """GET ``path`` as plain JSON; None when it does not exist."""
    return get_or_none(lambda: call_json(api, "GET", path))


def service_event(svc: dict, type_: str, reason: str, message: str, component: str,
                  host: Optional[str] = None) -> dict:
    """A core/v1 Event about Service ``svc`` (as MetalLB's controller and speaker emit them), or
    about another object when ``svc`` carries its ``kind`` and ``apiVersion``."""
    m = svc.get("metadata") or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = {"component": component, **({"host": host} if host else {})}
    return {"metadata": {"generateName": f"{m.get('name', 'svc')}.", "namespace": m.get("namespace")},
            "involvedObject": {"kind": svc.get("kind") or "Service", "apiVersion": svc.get("apiVersion") or "v1",
                               "name": m.get("name"),
                               "namespace": m.get("namespace"), "uid": m.get("uid"),
                               "resourceVersion": m.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": source}


class EventPoster:
    """Posts core/v1 Events about Services for one component (``metallb-controller``,
    ``metallb-speaker`` with its node as ``host``), best effort: off the caller's thread, from a
    small pool (a burst of events neither blocks a reconcile nor starts a thread per event); a
    failed post is logged at debug level and dropped."""

    def __init__(self, api, component: str, host: Optional[str] = None, workers: int = 2):
        self.api = api
        self.component, self.host = component, host
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="events")

    def post(self, svc: dict, type_: str, reason: str, message: str) -> None:
        body = service_event(svc, type_, reason, message, self.component, host=self.host)
        try:
            self._pool.submit(self._post, body)
        except RuntimeError:   # closed: the process is stopping
            pass

    def _post(self, body: dict) -> None:
        try:
            # bounded: a pending post must not hold up a stopping process
            call_json(self.api, "POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body, timeout=10)
        except Exception as e:  # noqa: BLE001 - events are best effort
            log.debug("event not written", reason=body["reason"], error=str(e))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
