"""The agent's status objects: ServiceL2Status (one per service this node announces in layer 2,
with its interfaces) and ServiceBGPStatus (one per service this node advertises, with its peers),
as MetalLB's speaker writes them.

* ``service_l2_statuses`` (pure) gives the wanted ServiceL2Status bodies; the BGP ones come from
  ``agent.bgp.status.service_bgp_statuses``. Both are keyed by ``status_key`` (node, service
  namespace, service name), which is how an existing object is matched (by its three labels).
* ``StatusObjects`` makes the API match them, through the write layer (``metalxdp.kube``):
  this node's objects are adopted when they are owned by this agent's pod and fit, the rest of
  this node's are deleted (so an agent restart adds no duplicates), missing ones are created
  (generateName) and their status written with conflict retry. A failed call makes the next
  sync reconcile again.
* Once ``start()``ed, the writes leave the reconcile pass: ``sync_*`` only record what is
  wanted and a writer thread reconciles it ``WRITE_DELAY_S`` later (the latest wanted set
  only, so a burst costs one round of calls), retrying a failed round every ``RETRY_S``. Until
  stop 36 they ran inside the pass: ~35 ms of API round trips per change on every node, right
  when ExaBGP needs the CPU to send the UPDATE the pass had just asked for. The objects are
  informational (MetalLB's status controllers are asynchronous too).
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping, Optional

from metalxdp.kube import ConflictError, api_errors, call_json, replace_custom_status
from metalxdp.log import get_logger

from .bgp.status import (API_VERSION, NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL,
                         service_bgp_statuses, status_key)

log = get_logger("agent")
GROUP, VERSION = "metallb.io", "v1beta1"
WRITE_DELAY_S = 0.05   # a wanted change waits this long for the writer (the announce goes first)
RETRY_S = 1.0          # a round with a failed call is tried again after this


def service_l2_statuses(node: str, interfaces: Mapping[str, Iterable[str]]) -> dict[tuple[str, str, str], dict]:
    """status_key -> desired ServiceL2Status body, for every service this node announces
    (``interfaces``: "ns/name" -> the interfaces it is announced on)."""
    want: dict = {}
    for svc_key, names in interfaces.items():
        key = status_key(node, svc_key)
        _, ns, name = key
        want[key] = {"apiVersion": API_VERSION, "kind": "ServiceL2Status",
                     "metadata": {"generateName": "l2-", "labels": {
                         NODE_LABEL: node, SERVICE_NAME_LABEL: name, SERVICE_NAMESPACE_LABEL: ns}},
                     "status": {"node": node, "serviceName": name, "serviceNamespace": ns,
                                "interfaces": [{"name": n} for n in sorted(names)]}}
    return want


class StatusObjects:
    """Writes this node's ServiceL2Status and ServiceBGPStatus objects (see the module docstring).
    ``pod_name``: the agent's pod in ``namespace``, owner of the objects (deleting the pod
    garbage-collects them, as MetalLB's speaker's)."""

    def __init__(self, api, node: str, namespace: str, pod_name: Optional[str] = None):
        self.api, self.node, self.namespace, self.pod_name = api, node, namespace, pod_name
        self._owner_refs: Optional[list] = None     # ownerReferences for our objects (see owners)
        self._l2_want: Optional[dict] = None        # bodies last reconciled (None: reconcile again)
        self._bgp_want: Optional[dict] = None
        self._cond = threading.Condition()
        self._pending: dict[str, dict] = {}          # kind -> the latest wanted bodies (writer)
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # ---- the writer thread -------------------------------------------------------------------
    def start(self) -> "StatusObjects":
        """Write from a thread of our own from now on (see the module docstring)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="status-objects", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _offer(self, kind: str, want: dict) -> None:
        with self._cond:
            self._pending[kind] = want
            self._cond.notify_all()

    def _writer(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
            # let the pass that asked (and the UPDATE it sent ExaBGP) have the CPU first; what
            # is wanted meanwhile replaces this round's want
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, WRITE_DELAY_S)
                if self._stopping:
                    return
                work = dict(self._pending)
            failed = False
            for kind, want in work.items():
                ok = self._write(kind, want)
                with self._cond:
                    if ok and self._pending.get(kind) is want:
                        del self._pending[kind]
                        self._cond.notify_all()
                failed = failed or not ok
            if failed:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, RETRY_S)

    def sync_l2(self, interfaces: Mapping[str, Iterable[str]]) -> None:
        """ServiceL2Status objects for the services this node announces (MetalLB's layer2 status
        controller), reconciled whenever that set changes. Also deleted: other nodes' objects
        for a service this node now announces (a dead node's: nobody else would ever remove
        them). An object whose status differs is replaced."""
        want = service_l2_statuses(self.node, interfaces)
        if self._thread is not None:
            self._offer("l2", want)
        else:
            self._write("l2", want)

    def sync_bgp(self, service_peers: Mapping[str, frozenset[str]]) -> None:
        """ServiceBGPStatus objects: one per service this node advertises, listing the peers,
        reconciled with this node's objects whenever the wanted set changes (other nodes' objects
        for the same service are legitimate: every node advertises). Kept objects are updated."""
        want = service_bgp_statuses(self.node, service_peers, self.namespace)
        if self._thread is not None:
            self._offer("bgp", want)
        else:
            self._write("bgp", want)

    def _write(self, kind: str, want: dict) -> bool:
        """Reconcile one kind unless ``want`` is what was last written; True when done."""
        if kind == "l2":
            if want == self._l2_want:
                return True
            ok = self._reconcile("servicel2statuses", want, adopt_if_status_differs=False,
                                 delete_others_for_wanted=True)
            self._l2_want = want if ok else None
            return ok
        if want == self._bgp_want:
            return True
        ok = self._reconcile("servicebgpstatuses", want, adopt_if_status_differs=True,
                             delete_others_for_wanted=False, label_selector=f"{NODE_LABEL}={self.node}")
        self._bgp_want = want if ok else None
        return ok

    # ---- ownership -------------------------------------------------------------------------
    def owners(self) -> list:
        """ownerReferences naming this agent's pod. Empty outside a pod or when the pod cannot be
        read; looked up once."""
        if self._owner_refs is None:
            self._owner_refs = []
            if self.pod_name:
                try:
                    pod = call_json(self.api, "GET", f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}")
                    self._owner_refs = [{"apiVersion": "v1", "kind": "Pod", "name": self.pod_name,
                                         "uid": pod["metadata"]["uid"]}]
                except api_errors() as e:
                    log.warning("cannot read the agent's pod: status objects get no owner", event="ownerUnknown",
                                pod=f"{self.namespace}/{self.pod_name}", status=e.status)
        return self._owner_refs

    def _owned_by_us(self, meta: dict) -> bool:
        want = {o["uid"] for o in self.owners()}
        return {o.get("uid") for o in meta.get("ownerReferences") or []} == want

    # ---- reconcile ---------------------------------------------------------------------------
    def _reconcile(self, plural: str, want: dict, *, adopt_if_status_differs: bool,
                   delete_others_for_wanted: bool, label_selector: str = "") -> bool:
        """Make the API's ``plural`` objects of this node match ``want`` (status_key -> body with
        metadata.generateName/labels and status). With ``delete_others_for_wanted`` other nodes'
        objects for a wanted service go too. False when a call failed."""
        args = (GROUP, VERSION, self.namespace, plural)
        coll = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{plural}"
        try:
            query = [("labelSelector", label_selector)] if label_selector else None
            items = call_json(self.api, "GET", coll, query=query).get("items") or []
        except api_errors() as e:
            log.debug("status objects not listed", kind=plural, status=e.status)
            return False
        kept: dict = {}
        ok = True
        for item in items:
            meta = item.get("metadata", {})
            labels = meta.get("labels") or {}
            mine = labels.get(NODE_LABEL) == self.node
            # keyed as this node's object for the same service: for another node's object,
            # "key in want" means this node now announces that service
            key = (self.node, labels.get(SERVICE_NAMESPACE_LABEL), labels.get(SERVICE_NAME_LABEL))
            if (mine and key in want and key not in kept and self._owned_by_us(meta)
                    and (adopt_if_status_differs or item.get("status") == want[key]["status"])):
                kept[key] = item
            elif mine or (delete_others_for_wanted and key in want):
                try:
                    call_json(self.api, "DELETE", f"{coll}/{meta['name']}")
                except api_errors() as e:
                    if e.status != 404:
                        ok = False
        for key, body in want.items():
            obj = kept.get(key)
            if obj is not None and obj.get("status") == body["status"]:
                continue
            try:
                if obj is None:
                    new = {k: v for k, v in body.items() if k != "status"}
                    new["metadata"] = {**new["metadata"], "ownerReferences": self.owners()}
                    obj = call_json(self.api, "POST", coll, new)
                replace_custom_status(self.api, *args, obj["metadata"]["name"], body["status"], current=obj)
            except (*api_errors(), ConflictError) as e:
                ok = False
                log.debug("status object not written", kind=plural, service=key,
                          status=getattr(e, "status", None), error=str(e))
        return ok
