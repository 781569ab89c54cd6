"""The agent: one per node. Watches Services, EndpointSlices, Nodes and the metallb.io
configuration; decides (pure modules) what this node announces; applies it.

* L2: ``agent.election`` picks one node per Service (identical on every agent, fed by the
  ``agent.membership`` view); the winner puts the VIPs into the XDP program's map (ARP/NDP
  answered in XDP) and sends MetalLB's gratuitous bursts; everyone else withdraws.
* BGP: ``agent.bgp.advertise`` computes the routes for each peer; ``agent.bgp.BGPSpeaker``
  (ExaBGP) sends them. BFD sessions (``agent.bfd``) tear a peer's BGP session down when they go
  Down and bring it back when Up.
* Split-brain guard: the XDP program stops answering when the agent's heartbeat is older than
  ``liveness_max_age_ms`` (a dead agent's node goes quiet); a clean stop extends the window so a
  planned restart loses nothing (the new agent adopts the pinned program and maps).

Everything runs from one reconcile thread, triggered (debounced) by any input change.
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from metalxdp.config.parse import parse
from metalxdp.config.types import Config, ConfigError
from metalxdp.kube import ApiException, client, service_event
from metalxdp.log import get_logger
from metalxdp.service import POOL_ANNOTATION, SHARED_IP_ANNOTATION, annotation, status_ips_from_k8s, wants_load_balancer
from metalxdp.watch import Informer, config_informers, obj_key

from . import election
from .bgp import advertise as bgpadv
from .metrics import AgentMetrics
from .nodeview import node_internal_ips, node_view_from_k8s

log = get_logger("agent")

JOIN_WAIT_S = 2.0   # longest wait for another member before the first election (a lone node waits once)


def local_interfaces() -> dict[str, int]:
    """name -> ifindex of the interfaces that are up and can do ARP (MetalLB's responder rules:
    UP, BROADCAST, not NOARP, not enslaved)."""
    out = {}
    for name in os.listdir("/sys/class/net"):
        base = f"/sys/class/net/{name}"
        try:
            flags = int(open(f"{base}/flags").read(), 16)
            if not flags & 0x1 or not flags & 0x2 or flags & 0x80 or os.path.exists(f"{base}/master"):
                continue   # IFF_UP, IFF_BROADCAST, IFF_NOARP, bond/bridge port
            out[name] = int(open(f"{base}/ifindex").read())
        except (OSError, ValueError):
            continue
    return out


@dataclass
class AgentSettings:
    node_name: str
    namespace: str = "metallb-system"
    lb_class: Optional[str] = None
    ignore_exclude_lb: bool = False
    ml_port: int = 7946                 # membership UDP port (memberlist's)
    ml_secret_name: str = "memberlist"  # Secret with key "secretkey", as MetalLB
    liveness_max_age_ms: int = 400      # XDP stops answering this long after the agent dies
    stop_grace_ms: int = 15000          # ...and this long after a clean stop (planned restart)
    handoff_quiet_s: float = 2.0        # planned move: keep answering stale clients until quiet...
    handoff_max_s: float = 30.0         # ...or at most this long (0: no handoff, withdraw at once)
    bgp_workdir: Path = Path("/run/metalxdp/agent")
    enable_bgp: bool = True
    pod_name: Optional[str] = None      # owner of the status objects we write (GC'd with the pod)


class Agent:
    def __init__(self, api: client.ApiClient, settings: AgentSettings, dataplane, garp, metrics: AgentMetrics,
                 registry=None):
        self.api, self.s, self.dp, self.garp, self.metrics = api, settings, dataplane, garp, metrics
        self.registry = registry
        self.node = settings.node_name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.config: Optional[Config] = None
        self.l2_announced: dict[tuple[str, str], str] = {}     # (ip, ifname) -> service key
        self.l2_services: set[str] = set()                     # services we announce (L2)
        self.membership = None
        self.speaker = None
        self.bfd = None
        self._peer_by_ip: dict[str, str] = {}
        self._announced_metric: set[tuple] = set()
        self._l2_want: Optional[dict] = None                  # ServiceL2Status bodies last reconciled
        self._announce_failed: set[str] = set()                # elected services with no usable interface
        self._owner_refs: Optional[list] = None               # ownerReferences for our objects (see _owners)
        self._bgp_want: Optional[dict] = None                 # ServiceBGPStatus bodies last reconciled
        self.handoff = election.HandoffTracker(quiet_s=settings.handoff_quiet_s, max_s=settings.handoff_max_s)
        self._handoff: dict[tuple[str, str], str] = {}           # (ip, ifname) -> service key
        self._moved: dict[str, str] = {}
        poke = lambda typ, obj: self._wake.set()  # noqa: E731
        self.services = Informer(api, "/api/v1/services", poke)
        self.nodes = Informer(api, "/api/v1/nodes", poke)
        self.slices = Informer(api, "/apis/discovery.k8s.io/v1/endpointslices", poke)
        self.secrets = Informer(api, f"/api/v1/namespaces/{settings.namespace}/secrets", poke)
        self.config_informers = config_informers(api, settings.namespace, poke)
        self.informers = [self.services, self.nodes, self.slices, self.secrets, *self.config_informers]

    # ---- start / stop --------------------------------------------------------------------
    def start(self) -> None:
        # Heartbeat first: Dataplane.open() has already put the gate back to
        # liveness_max_age_ms, so every millisecond spent listing objects below would otherwise
        # count against it. After a planned restart the adopted map still holds what the previous
        # agent announced; it stays answered until our first reconcile corrects it.
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            if not inf.wait_synced(60):
                raise RuntimeError(f"could not list {inf.path}")
        self._start_membership()
        self._wait_for_peers(JOIN_WAIT_S)
        threading.Thread(target=self._loop, name="agent-reconcile", daemon=True).start()
        self._wake.set()

    def _wait_for_peers(self, timeout: float) -> None:
        """Before the first election, give the join a moment to find the other agents (as
        memberlist's Join does before MetalLB's speaker proceeds): electing with ourselves as the
        only member would make us announce every VIP of the cluster, with gratuitous ARP, until
        the others are heard."""
        if self.membership is None or len(self.nodes.items()) < 2:
            return
        deadline = time.monotonic() + timeout
        while len(self.membership.members()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(self.membership.members()) < 2:
            log.warning("no other agent answered the join: electing alone", event="membershipAlone",
                        waited_s=timeout)

    def _my_node(self) -> dict:
        return self.nodes.get(self.node) or {}

    def _my_addresses(self) -> list[str]:
        return node_internal_ips(self._my_node())

    def _start_membership(self) -> None:
        from .membership import Membership, MembershipConfig, derive_key
        from .membership_udp import MembershipRunner, open_socket
        secret = self.secrets.get(f"{self.s.namespace}/{self.s.ml_secret_name}")
        key = ((secret or {}).get("data") or {}).get("secretkey")
        mine = [a for a in self._my_addresses() if ":" not in a]
        if not key or not mine:
            log.warning("membership disabled: every node counts as alive for L2 election "
                        "(as MetalLB without memberlist)", reason="no memberlist secret" if not key
                        else "node has no IPv4 InternalIP")
            return
        import base64
        seeds = []
        for n in self.nodes.items():
            if n["metadata"]["name"] != self.node:
                seeds += [(a, self.s.ml_port) for a in node_internal_ips(n) if ":" not in a][:1]
        m = Membership(self.node, (mine[0], self.s.ml_port), derive_key(base64.b64decode(key)),
                       seeds=seeds, config=MembershipConfig(), epoch=time.time_ns() // 1_000_000)
        self.membership = MembershipRunner(m, open_socket(mine[0], self.s.ml_port),
                                           on_join=lambda n: self._wake.set(),
                                           on_leave=lambda n: self._wake.set()).start()
        log.info("membership started", event="membershipStarted", bind=mine[0], seeds=len(seeds))

    def stop(self, planned: bool = True) -> None:
        """Stop. ``planned``: keep XDP answering for ``stop_grace_ms`` so a restarted agent takes
        over without a gap (it adopts the pinned program and maps)."""
        self._stop.set()
        self._wake.set()
        if self.dp is not None and planned:
            self.dp.set_liveness_max_age(self.s.stop_grace_ms)
            self.dp.heartbeat()
        for inf in self.informers:
            inf.stop()
        if self.membership:
            self.membership.stop(leave=True)
        if self.bfd:
            self.bfd.close()
        if self.speaker:
            self.speaker.close()

    def _heartbeat_loop(self) -> None:
        period = max(0.02, self.s.liveness_max_age_ms / 4000) if self.s.liveness_max_age_ms else 1.0
        while not self._stop.is_set():
            if self.dp is not None:
                try:
                    self.dp.heartbeat()
                except Exception:  # noqa: BLE001
                    log.error("heartbeat failed", exc_info=True)
            self._stop.wait(period)

    # ---- reconcile -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            if self._stop.is_set():
                return
            self._wake.clear()
            time.sleep(0.01)      # coalesce bursts of events
            self._wake.clear()
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - one bad object must not stop the agent
                log.error("reconcile failed", exc_info=True)

    def _load_config(self) -> Optional[Config]:
        resources = [o for inf in self.config_informers for o in inf.items()]
        secrets = {obj_key(s): s for s in self.secrets.items()}
        try:
            cfg = parse(resources, secrets=secrets)
        except ConfigError as e:
            if self.metrics:
                self.metrics.config_stale.set(1 if self.config else 0)
            log.error("failed to parse the configuration" + ("; keeping the last good one" if self.config else ""),
                      event="configStale", error=str(e))
            return self.config
        if cfg != self.config:
            log.info("config reloaded", event="configLoaded", pools=sorted(cfg.pools), peers=sorted(cfg.peers))
        if self.metrics:
            self.metrics.config_loaded.set(1)
            self.metrics.config_stale.set(0)
        return cfg

    def reconcile(self) -> None:
        cfg = self.config = self._load_config()
        if cfg is None:
            return
        nodes = {n["metadata"]["name"]: node_view_from_k8s(n, self.s.ignore_exclude_lb) for n in self.nodes.items()}
        members = self.membership.members() if self.membership else None
        if self.metrics and members is not None:
            self.metrics.members.set(len(members))
        slices_by_svc: dict[str, list] = {}
        for sl in self.slices.items():
            svc_name = ((sl.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
            if svc_name:
                slices_by_svc.setdefault(f"{sl['metadata']['namespace']}/{svc_name}", []).append(sl)
        want_l2: dict[tuple[str, str], tuple[str, bool]] = {}   # (ip, ifname) -> (svc key, misdirect)
        moved: dict[str, str] = {}    # VIP -> the other live node that now announces it
        bgp_views = []
        l2_status: dict[str, tuple] = {}
        ifaces = local_interfaces()
        failed: set[str] = set()
        for svc in self.services.items():
            key = obj_key(svc)
            if not wants_load_balancer(svc, self.s.lb_class):
                continue
            ips = status_ips_from_k8s(svc, strict=False)
            if not ips:
                continue
            has_serving, ready_nodes = election.endpoint_summary(slices_by_svc.get(key, []))
            spec = svc.get("spec") or {}
            meta = svc.get("metadata") or {}
            etp_local = spec.get("externalTrafficPolicy") == "Local"
            pool = annotation(svc, POOL_ANNOTATION)
            labels = meta.get("labels") or {}
            view = election.ServiceView(key, ips, labels, pool, etp_local, has_serving, ready_nodes,
                                        annotation(svc, SHARED_IP_ANNOTATION, ""))
            decision = election.announcing_node_for(view, nodes, cfg, members)
            if decision.node is not None and decision.node != self.node:
                moved.update({str(ip): decision.node for ip in ips})
            if decision.node == self.node:
                names = election.filter_interfaces(ifaces, decision.interfaces)
                if not names:
                    # elected, but none of the advertisement's interfaces is here (or usable):
                    # nobody answers for this VIP, as in MetalLB; say so once per episode
                    failed.add(key)
                    if key not in self._announce_failed:
                        log.warning("no interface to announce on", event="announceFailed", service=key,
                                    wanted=sorted(decision.interfaces), usable=sorted(ifaces))
                        self._event(svc, "Warning", "announceFailed",
                                    f"node \"{self.node}\" was elected but has none of the interfaces "
                                    f"{sorted(decision.interfaces)} usable for layer2")
                    continue
                misdirect = etp_local and self.node not in ready_nodes
                for ip in ips:
                    for ifname in names:
                        want_l2[(str(ip), ifname)] = (key, misdirect)
                l2_status[key] = (tuple(sorted(names)), svc)
            bgp_views.append(bgpadv.ServiceView(key, ips, pool, labels, etp_local,
                                                self.node in ready_nodes, has_serving))
        self._announce_failed = failed
        self._moved = moved
        self._apply_l2(want_l2, l2_status)
        if self.s.enable_bgp:
            self._apply_bgp(cfg, nodes, bgp_views)

    # ---- L2 --------------------------------------------------------------------------------
    def _apply_l2(self, want: dict, l2_status: dict) -> None:
        if self.dp is None:
            return
        # The VIP map is pinned and outlives the agent: after a restart it still holds what the
        # previous process announced, which this process's l2_announced does not know about. A
        # VIP that moved away or was deleted meanwhile would otherwise be answered for ever (two
        # nodes answering ARP for one IP). So the map itself is compared with what we want.
        names_by_index = {i: n for n, i in local_interfaces().items()}
        for ip, ifindex, _flags in self.dp.announced():
            ifname = names_by_index.get(ifindex)
            if ifname is not None and (ip, ifname) in want:
                continue
            if ifname is not None and ((ip, ifname) in self.l2_announced or (ip, ifname) in self._handoff):
                continue          # withdrawn (or handed off) below, with its log line
            self.dp.withdraw(ip, ifindex)
            if ifname:
                self.garp.cancel(ip, ifname)
            log.info("stale VIP withdrawn (announced before this agent started, or on an interface "
                     "that is gone)", event="serviceWithdrawn", protocol="layer2", ip=ip,
                     interface=ifname or str(ifindex), reason="stale")
        now = time.monotonic()
        for (ip, ifname), svc_key in list(self.l2_announced.items()):
            if (ip, ifname) not in want:
                self.garp.cancel(ip, ifname)
                del self.l2_announced[(ip, ifname)]
                if ip in self._moved and self.s.handoff_max_s > 0 and ifname in local_interfaces():
                    # planned move to another live node: stale clients (caches that ignored the
                    # new owner's GARP) still reach us; keep answering their unicast probes
                    # while the VIP's traffic goes on (VIP_F_HANDOFF), then withdraw
                    self.dp.announce(ip, ifname, handoff=True)
                    self.handoff.start(f"{ip}%{ifname}", now, self._rx_packets(ip, ifname))
                    self._handoff[(ip, ifname)] = svc_key
                    log.info("VIP moved to another node: handing off", event="handoffStarted",
                             service=svc_key, ip=ip, interface=ifname, new_node=self._moved[ip])
                    continue
                self._withdraw(ip, ifname, svc_key)
        for (ip, ifname), svc_key in list(self._handoff.items()):
            tkey = f"{ip}%{ifname}"
            if (ip, ifname) in want:               # it came back to us
                self.handoff.cancel(tkey)
                del self._handoff[(ip, ifname)]
            elif ip not in self._moved or not self.handoff.observe(tkey, now, self._rx_packets(ip, ifname)):
                self.handoff.cancel(tkey)
                del self._handoff[(ip, ifname)]
                log.info("handoff done: traffic stopped or time is up" if ip in self._moved
                         else "handoff cancelled: the VIP is no longer announced elsewhere",
                         event="handoffDone", service=svc_key, ip=ip, interface=ifname)
                self._withdraw(ip, ifname, svc_key)
        attached = set()
        for (ip, ifname), (svc_key, misdirect) in want.items():
            new = (ip, ifname) not in self.l2_announced
            self.dp.announce(ip, ifname, etp_local_misdirect=misdirect)
            if ifname not in attached and ifname not in self._attached_ifaces():
                self.dp.attach(ifname)
            attached.add(ifname)
            if new:
                self.l2_announced[(ip, ifname)] = svc_key
                self.garp.start(ip, ifname)
                log.info("service announced", event="serviceAnnounced", protocol="layer2", service=svc_key,
                         ip=ip, interface=ifname, node=self.node)
        # events, ServiceL2Status and metrics follow the set of services we announce
        for key, (names, svc) in l2_status.items():
            if key not in self.l2_services:
                self._event(svc, "Normal", "nodeAssigned", f"announcing from node \"{self.node}\" with protocol \"layer2\"")
        self.l2_services = set(l2_status)
        self._sync_l2_status(l2_status)
        self._sync_announced_metric("layer2", {(k, str(ip)) for (ip, _), (k, _m) in want.items()})

    def _withdraw(self, ip: str, ifname: str, svc_key: str) -> None:
        from .dataplane import DataplaneError
        try:
            self.dp.withdraw(ip, ifname)
        except DataplaneError:
            pass          # the interface is gone: its entry went with it
        log.info("service withdrawn", event="serviceWithdrawn", protocol="layer2", service=svc_key,
                 ip=ip, interface=ifname)

    def _rx_packets(self, ip: str, ifname: str) -> int:
        try:
            c = self.dp.vip_counters(ip, ifname)
        except Exception:  # noqa: BLE001 - interface gone
            return 0
        return c.get("rx_packets", 0)   # data from stale clients, not ARP (broadcasts reach everyone)

    def _attached_ifaces(self) -> set[str]:
        idx = {i for i in self.dp.attached}
        return {n for n, i in local_interfaces().items() if i in idx}

    def _sync_announced_metric(self, protocol: str, current: set) -> None:
        if not self.metrics:
            return
        cur = {(svc, protocol, self.node, ip) for svc, ip in current}
        for gone in {m for m in self._announced_metric if m[1] == protocol} - cur:
            try:
                self.metrics.announced.remove(*gone)
            except KeyError:
                pass
            self._announced_metric.discard(gone)
        for m in cur - self._announced_metric:
            self.metrics.announced.labels(*m).set(1)
            self._announced_metric.add(m)

    def _event(self, svc: dict, type_: str, reason: str, message: str) -> None:
        body = service_event(svc, type_, reason, message, "metallb-speaker", host=self.node)
        threading.Thread(target=self._post_event, args=(body["metadata"]["namespace"], body), daemon=True).start()

    def _post_event(self, ns: str, body: dict) -> None:
        try:
            client.CoreV1Api(self.api).create_namespaced_event(ns, body)
        except Exception as e:  # noqa: BLE001 - events are best effort
            log.debug("event not written", error=str(e))

    def _owners(self) -> list:
        """ownerReferences naming this agent's pod (MetalLB's speaker owns its status objects the
        same way: deleting the pod garbage-collects them). Empty outside a pod or when the pod
        cannot be read; looked up once."""
        if self._owner_refs is None:
            self._owner_refs = []
            if self.s.pod_name:
                try:
                    pod = client.CoreV1Api(self.api).read_namespaced_pod(self.s.pod_name, self.s.namespace)
                    self._owner_refs = [{"apiVersion": "v1", "kind": "Pod", "name": self.s.pod_name,
                                         "uid": pod.metadata.uid}]
                except ApiException as e:
                    log.warning("cannot read the agent's pod: status objects get no owner", event="ownerUnknown",
                                pod=f"{self.s.namespace}/{self.s.pod_name}", status=e.status)
        return self._owner_refs

    def _owned_by_us(self, meta: dict) -> bool:
        want = {o["uid"] for o in self._owners()}
        return {o.get("uid") for o in meta.get("ownerReferences") or []} == want

    def _sync_l2_status(self, l2_status: dict) -> None:
        """ServiceL2Status objects for the services this node announces (MetalLB's layer2 status
        controller), reconciled whenever that set changes (see _reconcile_status_objects). Also
        deleted: other nodes' objects for a service this node now announces (a dead node's:
        nobody else would ever remove them). An object whose status differs is replaced."""
        from .bgp.status import API_VERSION, NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL, status_key
        want: dict = {}
        for svc_key, (names, _svc) in l2_status.items():
            key = status_key(self.node, svc_key)
            _, ns, name = key
            want[key] = {"apiVersion": API_VERSION, "kind": "ServiceL2Status",
                         "metadata": {"generateName": "l2-", "labels": {
                             NODE_LABEL: self.node, SERVICE_NAME_LABEL: name, SERVICE_NAMESPACE_LABEL: ns}},
                         "status": {"node": self.node, "serviceName": name, "serviceNamespace": ns,
                                    "interfaces": [{"name": n} for n in sorted(names)]}}
        if want == self._l2_want:
            return
        ok = self._reconcile_status_objects("servicel2statuses", want, adopt_if_status_differs=False,
                                            delete_others_for_wanted=True)
        self._l2_want = want if ok else None        # None: reconcile again at the next sync

    def _reconcile_status_objects(self, plural: str, want: dict, *, adopt_if_status_differs: bool,
                                  delete_others_for_wanted: bool, label_selector: str = "") -> bool:
        """Make the API's ``plural`` objects of this node match ``want`` (status_key -> body with
        metadata.generateName/labels and status). This node's objects are adopted when they are
        owned by this agent's pod (see _owners) and, unless ``adopt_if_status_differs``, have the
        wanted status; the rest of this node's are deleted, so an agent restart adds no
        duplicates. With ``delete_others_for_wanted`` other nodes' objects for a wanted service go
        too. False when a call failed (the caller reconciles again at its next sync)."""
        from .bgp.status import NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL
        co = client.CustomObjectsApi(self.api)
        args = ("metallb.io", "v1beta1", self.s.namespace, plural)
        try:
            items = co.list_namespaced_custom_object(*args, label_selector=label_selector).get("items", [])
        except ApiException as e:
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
                    co.delete_namespaced_custom_object(*args, meta["name"])
                except ApiException as e:
                    if e.status != 404:
                        ok = False
        for key, body in want.items():
            obj = kept.get(key)
            if obj is not None and obj.get("status") == body["status"]:
                continue
            try:
                if obj is None:
                    new = {k: v for k, v in body.items() if k != "status"}
                    new["metadata"] = {**new["metadata"], "ownerReferences": self._owners()}
                    obj = co.create_namespaced_custom_object(*args, new)
                obj["status"] = body["status"]
                co.replace_namespaced_custom_object_status(*args, obj["metadata"]["name"], obj)
            except ApiException as e:
                ok = False
                log.debug("status object not written", kind=plural, service=key, status=e.status)
        return ok

    # ---- BGP -------------------------------------------------------------------------------
    def _ensure_speaker(self):
        if self.speaker is None:
            from .bgp.config_render import NodeAddresses
            from .bgp.exabgp import BGPSpeaker
            addrs = self._my_addresses()
            v4 = next((ipaddress.ip_address(a) for a in addrs if ":" not in a), None)
            v6 = next((ipaddress.ip_address(a) for a in addrs if ":" in a), None)
            self.speaker = BGPSpeaker(NodeAddresses(self.node, v4, v6), self.s.bgp_workdir / self.node,
                                      registry=self.registry)
        return self.speaker

    def _apply_bgp(self, cfg: Config, nodes: dict, views: list) -> None:
        me = nodes.get(self.node)
        if me is None:
            return
        peers = bgpadv.active_peers(cfg, me)
        if not peers and self.speaker is None:
            return
        speaker = self._ensure_speaker()
        speaker.set_peers(peers.values())
        plan = bgpadv.plan_for_node(cfg, me, views)
        speaker.set(plan.advertisements, plan.prefix_owners)
        self._sync_announced_metric("bgp", {(k, str(ip)) for k, ps in plan.service_peers.items() if ps
                                            for v in views if v.key == k for ip in v.ips})
        self._sync_bfd(cfg, peers)
        self._sync_bgp_status(plan.service_peers)

    def _sync_bgp_status(self, service_peers: dict) -> None:
        """ServiceBGPStatus objects: one per service this node advertises, listing the peers,
        reconciled with this node's objects whenever the wanted set changes (other nodes' objects
        for the same service are legitimate: every node advertises). Kept objects are updated."""
        from .bgp.status import NODE_LABEL, service_bgp_statuses
        want = service_bgp_statuses(self.node, service_peers, self.s.namespace)
        if want == self._bgp_want:
            return
        ok = self._reconcile_status_objects("servicebgpstatuses", want, adopt_if_status_differs=True,
                                            delete_others_for_wanted=False,
                                            label_selector=f"{NODE_LABEL}={self.node}")
        self._bgp_want = want if ok else None       # None: reconcile again at the next sync

    def _sync_bfd(self, cfg: Config, peers: dict) -> None:
        from .bfd.runner import BFDManager, sessions_for_peers
        wanted = sessions_for_peers(peers.values(), cfg.bfd_profiles)
        if not wanted and self.bfd is None:
            return
        self._peer_by_ip = {str(p.peer_address): name for name, p in peers.items()}
        if self.bfd is None:
            self.bfd = BFDManager(self._bfd_changed)
            if self.registry is not None:   # metallb_bfd_* on the agent's metrics endpoint
                from .bfd.metrics import register_bfd_metrics
                register_bfd_metrics(self.registry, self.bfd)
        self.bfd.sync(wanted)

    def _bfd_changed(self, peer_ip: str, old: str, new: str) -> None:
        name = self._peer_by_ip.get(peer_ip)
        if not name or self.speaker is None:
            return
        log.info("BFD session state changed", event="bfdStateChanged", peer=name, old=old, new=new)
        if new == "Up":
            self.speaker.peer_up(name)
        elif old == "Up":
            self.speaker.peer_down(name)

    # ---- metrics source ----------------------------------------------------------------------
    def xdp_counters(self) -> tuple[dict, dict]:
        if self.dp is None:
            return {}, {}
        names = {i: n for n, i in local_interfaces().items()}
        per_vip = {(ip, names.get(ifindex, str(ifindex))): c for (ip, ifindex), c in self.dp.counters().items()}
        return per_vip, self.garp.sent()
