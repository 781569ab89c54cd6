"""The one boundary to the Kubernetes API: every other module reaches Kubernetes through here.

Keeps the ``kubernetes`` client import in one place, builds clients from a kubeconfig or the
in-cluster service account, and is the one write layer the controller, agent, webhook and
operator share:

* ``get_or_create(read, create)``: an object, created when missing (a lost create race reads
  the winner's);
* ``update_with_retry(read, change, write)``: read-modify-write, again on 409 Conflict;
* ``replace_custom_status(...)``: a custom object's status, by GET + PUT with conflict retry;
* ``call_json`` / ``get_json``: raw JSON requests, for read-modify-writes that must keep every
  field (the generated models drop fields they do not know);
* ``EventPoster``: core/v1 Events about Services, best effort, from a small pool of threads;
* ``apply(api, manifest)``: create or replace (the lab).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

import urllib3
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from .log import get_logger

__all__ = ["client", "ApiException", "ConflictError", "api_client", "dynamic_client", "apply",
           "get_or_none", "get_or_create", "update_with_retry", "replace_custom_status", "call_json", "get_json",
           "service_event", "EventPoster"]

log = get_logger("kube")
T = TypeVar("T")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class ConflictError(RuntimeError):
    """An object kept changing under a read-modify-write (every attempt ended in 409)."""


# ---- the write layer ----------------------------------------------------------------------

def get_or_none(read: Callable[[], T]) -> Optional[T]:
    """``read()``, or None when the object does not exist (404)."""
    try:
        return read()
    except ApiException as e:
        if e.status != 404:
            raise
        return None


def get_or_create(read: Callable[[], T], create: Callable[[], T]) -> tuple[T, bool]:
    """``read()``, or ``create()`` when the object does not exist (404); a create that loses a race
    with another writer (409) reads the winner's object. Returns (object, created)."""
    try:
        return read(), False
    except ApiException as e:
        if e.status != 404:
            raise
    try:
        return create(), True
    except ApiException as e:
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
        except ApiException as e:
            if e.status != 409:
                raise
    raise ConflictError(f"{what} keeps changing under us")


def replace_custom_status(api: client.ApiClient, group: str, version: str, namespace: str, plural: str,
                          name: str, status: dict, *, create: Optional[dict] = None,
                          current: Optional[dict] = None, attempts: int = 5) -> Optional[dict]:
    """Make a namespaced custom object's status ``status``: GET + PUT of the status subresource,
    not PATCH (the Python client's patch turns "" into null, which a schema with string fields
    refuses), again on 409. ``create``: the body to create the object from when it is missing;
    ``current``: an up-to-date copy the caller already has (saves the first GET). Returns the
    object written, or None when its status was already ``status``."""
    co = client.CustomObjectsApi(api)
    args = (group, version, namespace, plural)
    first = [current] if current is not None else []

    def read() -> dict:
        if first:
            return first.pop()
        get = lambda: co.get_namespaced_custom_object(*args, name)  # noqa: E731
        if create is None:
            return get()
        return get_or_create(get, lambda: co.create_namespaced_custom_object(*args, create))[0]

    def change(obj: dict) -> Optional[dict]:
        return None if obj.get("status") == status else {**obj, "status": status}

    return update_with_retry(read, change, lambda obj: co.replace_namespaced_custom_object_status(*args, name, obj),
                             what=f"{plural}/{namespace}/{name}", attempts=attempts)


def call_json(api: client.ApiClient, method: str, path: str, body: Any = None, *, query: Optional[list] = None,
              content_type: str = JSON, timeout: float = 30) -> dict:
    """One request with plain JSON in and out (no generated models: a read-modify-write keeps
    every field, also those the client does not know). Raises ApiException."""
    resp = api.call_api(path, method, query_params=query or [], body=body, auth_settings=["BearerToken"],
                        header_params={"Accept": JSON, "Content-Type": content_type},
                        _preload_content=False, _return_http_data_only=True, _request_timeout=timeout)
    data = resp.data
    return json.loads(data) if data else {}


def get_json(api: client.ApiClient, path: str) -> Optional[dict]:
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

    def __init__(self, api: client.ApiClient, component: str, host: Optional[str] = None, workers: int = 2):
        self.core = client.CoreV1Api(api)
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
            self.core.create_namespaced_event(body["metadata"]["namespace"], body, _request_timeout=10)
        except Exception as e:  # noqa: BLE001 - events are best effort
            log.debug("event not written", reason=body["reason"], error=str(e))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def api_client(kubeconfig: Optional[str] = None) -> client.ApiClient:
    """A client from ``kubeconfig`` (or $KUBECONFIG), else the in-cluster service account."""
    # lab and test API servers use self-signed serving certs (insecure-skip-tls-verify in their
    # kubeconfig); urllib3 would warn on every request
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return config.new_client_from_config(config_file=str(path))
    config.load_incluster_config()
    return client.ApiClient()


def dynamic_client(api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api)


def apply(api: client.ApiClient, obj: dict[str, Any], namespace: Optional[str] = None) -> Any:
    """Create ``obj``, or replace it (keeping resourceVersion) when it exists."""
    dyn = dynamic_client(api)
    res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = obj.get("metadata", {}).get("namespace") or (namespace if res.namespaced else None)
    if res.namespaced and ns:
        obj.setdefault("metadata", {})["namespace"] = ns
    try:
        return res.create(body=obj, namespace=ns)
    except ApiException as e:
        if e.status != 409:
            raise
    cur = res.get(name=obj["metadata"]["name"], namespace=ns)
    obj["metadata"]["resourceVersion"] = cur.metadata.resourceVersion
    return res.replace(body=obj, namespace=ns)
