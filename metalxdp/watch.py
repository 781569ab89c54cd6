"""List+watch of Kubernetes collections as plain dicts, with resume and 410 handling.

An ``Informer`` lists a collection, then watches it from the list's resourceVersion; when the
watch ends it resumes from the last resourceVersion it saw; on ``410 Gone`` (history compacted)
it lists again and reports the differences as events, so consumers never miss a deletion.
Unknown event types are skipped with a warning. Objects stay plain dicts (the API's JSON):
the pure modules (config parser, allocator, election) consume exactly that.
"""
from __future__ import annotations

import json

import urllib3
import threading
from typing import Callable, Optional

from .kube import api_errors, request
from .log import get_logger

log = get_logger("watch")

EventHandler = Callable[[str, dict], None]   # (ADDED|MODIFIED|DELETED, object)


# The metallb.io collections the configuration is made of: (API version, plural). The
# controller and every agent watch exactly these (optional: a CRD may not be installed yet).
CONFIG_COLLECTIONS = [("v1beta1", "ipaddresspools"), ("v1beta1", "l2advertisements"),
                      ("v1beta1", "bgpadvertisements"), ("v1beta2", "bgppeers"),
                      ("v1beta1", "bfdprofiles"), ("v1beta1", "communities"), ("v1beta1", "addresspools")]


def config_informers(api, namespace: str, handler: "EventHandler") -> list["Informer"]:
    """One Informer per metallb.io configuration collection in ``namespace``."""
    return [Informer(api, f"/apis/metallb.io/{v}/namespaces/{namespace}/{plural}", handler, optional=True)
            for v, plural in CONFIG_COLLECTIONS]


def obj_key(obj: dict) -> str:
    m = obj.get("metadata") or {}
    return f"{m['namespace']}/{m['name']}" if m.get("namespace") else m.get("name", "")


class Informer:
    """Keeps ``cache`` (key -> object) of one collection in sync; calls ``handler`` on changes.

    path: the collection URL, e.g. "/api/v1/services" or
    "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools".
    optional: a collection that may not exist (CRD not installed): treated as empty, retried.
    """

    def __init__(self, api, path: str, handler: Optional[EventHandler] = None,
                 label_selector: str = "", watch_timeout: int = 240, optional: bool = False,
                 field_selector: str = ""):
        self.api, self.path, self.handler = api, path, handler
        self.label_selector, self.watch_timeout, self.optional = label_selector, watch_timeout, optional
        self.field_selector = field_selector
        self.cache: dict[str, dict] = {}
        self.synced = threading.Event()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._resp = None

    # ---- I/O -----------------------------------------------------------------------------
    def _request(self, params: list, stream: bool):
        """GET with the client's auth; returns the urllib3 response (a watch: body not read yet).
        A watch's read timeout outlasts its timeoutSeconds and bookmarks, so a connection that
        went silent (a peer that vanished without a reset) ends and the watch resumes."""
        timeout = (10, self.watch_timeout + 60) if stream else 60
        return request(self.api, "GET", self.path, query=params, timeout=timeout, stream=stream)

    def _selectors(self) -> list:
        return ([("labelSelector", self.label_selector)] if self.label_selector else []) + \
               ([("fieldSelector", self.field_selector)] if self.field_selector else [])

    def _list(self) -> str:
        params = self._selectors()
        try:
            data = json.loads(self._request(params, stream=False).data)
        except api_errors() as e:
            if e.status == 404 and self.optional:
                data = {"items": [], "metadata": {"resourceVersion": ""}}
            else:
                raise
        items = {obj_key(o): o for o in data.get("items") or []}
        kind = (data.get("kind") or "").removesuffix("List")
        for o in items.values():  # list items carry no apiVersion/kind
            o.setdefault("kind", kind)
            o.setdefault("apiVersion", data.get("apiVersion", ""))
        with self.lock:
            old = self.cache
            self.cache = items
        for k, o in items.items():
            if k not in old:
                self._emit("ADDED", o)
            elif old[k].get("metadata", {}).get("resourceVersion") != o["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", o)
        for k, o in old.items():
            if k not in items:
                self._emit("DELETED", o)
        self.synced.set()
        return (data.get("metadata") or {}).get("resourceVersion", "")

    def _watch(self, rv: str) -> str:
        """Watch from ``rv``; return the last resourceVersion seen ("" means: list again)."""
        if not rv:  # an optional collection that did not exist: poll until it does
            self._stop.wait(2)
            return ""
        params = [("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                  ("timeoutSeconds", str(self.watch_timeout))]
        params += self._selectors()
        resp = self._resp = self._request(params, stream=True)
        buf = b""
        try:
            for chunk in self._chunks(resp):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    typ, obj = ev.get("type"), ev.get("object") or {}
                    if typ == "ERROR":
                        if obj.get("code") == 410:
                            log.info("watch expired (410 Gone): listing again", path=self.path)
                            return ""
                        log.warning("watch error", path=self.path, status=obj)
                        return ""
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if typ == "BOOKMARK":
                        continue
                    if typ not in ("ADDED", "MODIFIED", "DELETED"):
                        log.warning("unknown watch event type skipped", path=self.path, type=typ)
                        continue
                    k = obj_key(obj)
                    with self.lock:
                        if typ == "DELETED":
                            self.cache.pop(k, None)
                        else:
                            self.cache[k] = obj
                    self._emit(typ, obj)
                if self._stop.is_set():
                    return rv
        finally:
            resp.release_conn()
        return rv

    @staticmethod
    def _chunks(resp):
        """The watch body as it arrives; the server closing the stream (timeoutSeconds) is a
        normal end, after which the watch resumes from the last resourceVersion."""
        try:
            yield from resp.stream(65536, decode_content=False)
        except urllib3.exceptions.ProtocolError:
            return

    def _emit(self, typ: str, obj: dict) -> None:
        if self.handler:
            try:
                self.handler(typ, obj)
            except Exception:  # noqa: BLE001 - a handler bug must not kill the watch
                log.error("event handler failed", exc_info=True, path=self.path, type=typ)

    def _run(self) -> None:
        rv, backoff = "", 0.2
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                rv = self._watch(rv)
                backoff = 0.2
            except api_errors() as e:
                if e.status == 410:
                    rv = ""
                    continue
                log.warning("list/watch failed; retrying", path=self.path, status=e.status,
                            reason=e.reason, retry_in=backoff)
                rv = ""
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except Exception as e:  # noqa: BLE001 - connection resets, timeouts, bad JSON
                if self._stop.is_set():
                    return
                log.warning("list/watch failed; retrying", path=self.path, error=str(e), retry_in=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)

    # ---- control -----------------------------------------------------------------------
    def start(self) -> "Informer":
        self._thread = threading.Thread(target=self._run, name=f"informer{self.path}", daemon=True)
        self._thread.start()
        return self

    def wait_synced(self, timeout: float = 60) -> bool:
        return self.synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        r = self._resp
        if r is not None:
            try:
                r.shutdown() if hasattr(r, "shutdown") else r.close()
            except Exception:  # noqa: BLE001
                pass

    def items(self) -> list[dict]:
        with self.lock:
            return list(self.cache.values())

    def get(self, key: str) -> Optional[dict]:
        with self.lock:
            return self.cache.get(key)
