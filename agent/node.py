"""The agent: one per node. Watches Services, EndpointSlices, Nodes and the metallb.io
configuration; decides (pure modules) what this node announces; applies it.

* L2: ``agent.election`` picks one node per Service (identical on every agent, fed by the
  ``agent.membership`` view); on the winner ``agent.l2.L2Announcer`` puts the VIPs into the XDP
  program's map (ARP/NDP answered in XDP) and sends MetalLB's gratuitous bursts; everyone else
  withdraws (or hands off, when the VIP moved to another live node).
* BGP: ``agent.bgp.advertise`` computes the routes for each peer; ``agent.bgp.announcer``
  sends them through ExaBGP, with the BFD sessions (``agent.bfd``) that tear a peer's BGP
  session down when they go Down and bring it back when Up.
* Status: ServiceL2Status / ServiceBGPStatus objects (``agent.status_objects``), events and
  the announced-service metric.
* Split-brain guard: the XDP program stops answering when the agent's heartbeat is older than
  ``liveness_max_age_ms`` (a dead agent's node goes quiet); a clean stop extends the window so a
  planned restart loses nothing (the new agent adopts the pinned program and maps).

This module builds the views (Nodes, Services, endpoints) the pure decisions take and
dispatches their results. Everything runs from one reconcile thread, triggered (debounced) by
any input change.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from metalxdp.config.parse import parse
from metalxdp.config.types import Config, ConfigError
from metalxdp.health import loop_live
from metalxdp.kube import EventPoster, RestClient
from metalxdp.log import get_logger
from metalxdp.service import POOL_ANNOTATION, SHARED_IP_ANNOTATION, annotation, status_ips_from_k8s, wants_load_balancer
from metalxdp.watch import Informer, config_informers, obj_key

from . import election
from .bgp import advertise as bgpadv
from .bgp.announcer import BGPAnnouncer
from .l2 import L2Announcer, local_interfaces
from .metrics import SLOW_RECONCILE_S, AgentMetrics, announcement_changes, processed_updates
from .nodeview import node_internal_ips, node_view_from_k8s
from . import reasons
from .status_objects import StatusObjects
from .wake_filter import WakeFilter

log = get_logger("agent")

# How the reconcile loop batches events: an event that finds the loop idle (its last pass ended
# IDLE_AFTER_S ago or more) is handled at once, and so is one that arrives while passes follow
# each other but is one of few (fewer than BURST_WAKES since the last pass began: a Service's
# EndpointSlice landing during the Service's own pass); only a burst waits COALESCE_S for the
# rest of it. (Until stop 36 every pass waited 10 ms, which was 10 ms on every single
# Service's announce and withdraw; until stop 40 so did an event that came during a pass:
# cluster lab, a Service's status and its EndpointSlice 10 ms apart, 10 ms on the announce.)
COALESCE_S = 0.01
IDLE_AFTER_S = 0.005
BURST_WAKES = 3


def idle_since(last_pass: Optional[float], now: float) -> bool:
    """True when an event arriving at ``now`` starts a burst: handle it without waiting."""
    return last_pass is None or now - last_pass >= IDLE_AFTER_S


def gather_first(last_pass: Optional[float], now: float, wakes: int) -> bool:
    """Wait COALESCE_S before the pass: ``wakes`` events woke the loop since the last pass
    began, right after that pass (a burst under way)."""
    return not idle_since(last_pass, now) and wakes >= BURST_WAKES


def config_inputs(resources: list, secrets: dict) -> Optional[tuple]:
    """What a Config is parsed from, as (kind, namespace/name, resourceVersion) of every object;
    None when an object has no resourceVersion (then nothing is cached)."""
    out = []
    for o in [*resources, *secrets.values()]:
        rv = (o.get("metadata") or {}).get("resourceVersion")
        if not rv:
            return None
        out.append((o.get("kind", ""), obj_key(o), rv))
    return tuple(sorted(out))


JOIN_WAIT_S = 2.0   # longest wait for another member before the first election (a lone node waits once)


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
    crash_hold_ms: int = 15000          # a crashed peer (node up, agent down) keeps its VIPs this long
    handoff_quiet_s: float = 2.0        # planned move: keep answering stale clients until quiet...
    handoff_max_s: float = 30.0         # ...or at most this long (0: no handoff, withdraw at once)
    bgp_workdir: Path = Path("/run/metalxdp/agent")
    enable_bgp: bool = True
    pod_name: Optional[str] = None      # owner of the status objects we write (GC'd with the pod)


class Agent:
    def __init__(self, api: RestClient, settings: AgentSettings, dataplane, garp, metrics: AgentMetrics,
                 registry=None):
        self.api, self.s, self.dp, self.garp, self.metrics = api, settings, dataplane, garp, metrics
        self.registry = registry
        self.node = settings.node_name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_pass: Optional[float] = None   # monotonic end of the last reconcile pass
        self._started = False
        self.config: Optional[Config] = None
        self._config_stale = False                             # the last parse failed; an older config rules
        self.l2_services: set[str] = set()                     # services we announce (L2)
        self.membership = None
        self.l2 = L2Announcer(self.node, dataplane, garp, settings.handoff_quiet_s, settings.handoff_max_s)
        self.bgp = BGPAnnouncer(self.node, settings.bgp_workdir, registry, wake=lambda: self._wake.set())
        self.status = StatusObjects(api, self.node, settings.namespace, settings.pod_name)
        self.events = EventPoster(api, "metallb-speaker", host=self.node)
        self._announced_metric: set[tuple] = set()
        self.reasons = reasons.ReasonBook()                    # (service, protocol) -> Outcome, last pass
        self._event_throttle = reasons.EventThrottle()         # reason Events: deduplicated, rate-limited
        self._svc_info: dict[str, tuple] = {}                  # key -> (Service, ips, pool), last pass
        self.bgp_services: set[str] = set()                    # services announced to >= 1 BGP peer
        self._pending_updates = 0                              # watch events since the last pass
        self._wakes = 0                                        # of those, the ones that woke it
        self._pending_lock = threading.Lock()
        self._config_inputs: Optional[tuple] = None            # what self.config was parsed from

        def poke(_typ: str, _obj: dict) -> None:
            with self._pending_lock:
                self._pending_updates += 1
                self._wakes += 1
            self._wake.set()

        # Services, slices and Nodes wake the pass only when they can change what it decides
        # (agent.wake_filter); every event is still counted and cached
        self.wake_filter = WakeFilter(settings.lb_class, settings.ignore_exclude_lb)

        def poke_if(relevant):
            def handler(typ: str, obj: dict) -> None:
                if relevant(typ, obj):
                    poke(typ, obj)
                else:
                    with self._pending_lock:
                        self._pending_updates += 1
            return handler
        self.services = Informer(api, "/api/v1/services", poke_if(self.wake_filter.service))
        self.nodes = Informer(api, "/api/v1/nodes", poke_if(self.wake_filter.node))
        self.slices = Informer(api, "/apis/discovery.k8s.io/v1/endpointslices",
                               poke_if(self.wake_filter.endpoint_slice))
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
        self.status.start()       # status objects are written off the reconcile pass
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            if not inf.wait_synced(60):
                raise RuntimeError(f"could not list {inf.path}")
        self._start_membership()
        self._wait_for_peers(JOIN_WAIT_S)
        threading.Thread(target=self._loop, name="agent-reconcile", daemon=True).start()
        self._wake.set()
        self._started = True

    # ---- probes (metalxdp.health): /healthz and /readyz ----------------------------------
    def live(self) -> tuple[bool, str]:
        return loop_live(self._started, self._last_pass, time.monotonic())

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting: listing objects and joining the membership"
        if self._last_pass is None:
            return False, "no reconcile pass has completed yet"
        if self.dp is not None:
            ifindex = local_interfaces()
            unattached = sorted({ifn for _ip, ifn in self.l2.announced
                                 if ifindex.get(ifn) not in self.dp.attached})
            if unattached:
                return False, f"XDP not attached on {', '.join(unattached)} (VIPs announced there)"
        return True, "ok"

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
        from .membership_udp import MembershipRunner, open_socket, open_stream_socket
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
                       seeds=seeds, config=MembershipConfig(restart_hold=self.s.stop_grace_ms / 1000,
                                               crash_hold=self.s.crash_hold_ms / 1000),
                       epoch=time.time_ns() // 1_000_000)
        try:
            stream = open_stream_socket(mine[0], self.s.ml_port)
        except OSError as e:          # e.g. the port taken by a MetalLB speaker over TCP
            log.warning("membership TCP fallback probes disabled: cannot listen",
                        event="membershipStreamDisabled", bind=mine[0], port=self.s.ml_port,
                        error=str(e))
            stream = None
        self.membership = MembershipRunner(m, open_socket(mine[0], self.s.ml_port),
                                           on_join=lambda n: self._wake.set(),
                                           on_leave=lambda n: self._wake.set(),
                                           on_held=lambda n: self._wake.set(),
                                           stream_sock=stream).start()
        log.info("membership started", event="membershipStarted", bind=mine[0], seeds=len(seeds))

    def stop(self, planned: bool = True, restarting: bool = False) -> None:
        """Stop. ``planned``: keep XDP answering for ``stop_grace_ms`` so a restarted agent takes
        over without a gap (it adopts the pinned program and maps). ``restarting``: a new agent
        comes on this node; the peers keep this node's VIPs here meanwhile (membership)."""
        self._stop.set()
        self._wake.set()
        if self.dp is not None and not planned and getattr(self.dp, "detach_on_exit", False):
            # an uninstall: detach and unpin first, the pod's 2 s grace period may end before
            # BGP and the rest are down (close is idempotent; main closes it again)
            self.dp.close()
        if self.dp is not None and planned:
            self.dp.set_liveness_max_age(self.s.stop_grace_ms)
            self.dp.heartbeat()
        for inf in self.informers:
            inf.stop()
        self.status.stop()
        if self.membership:
            self.membership.stop(leave=True, restarting=restarting and planned)
        self.bgp.close(restarting=restarting and planned)
        self.events.close()

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
            with self._pending_lock:
                wakes, self._wakes = self._wakes, 0
            if gather_first(self._last_pass, time.monotonic(), wakes):
                time.sleep(COALESCE_S)      # a burst is under way: gather the rest of it
                self._wake.clear()
                with self._pending_lock:
                    self._wakes = 0
            self.reconcile_counted()
            self._last_pass = time.monotonic()

    def reconcile_counted(self) -> None:
        """One reconcile pass, counted into metallb_k8s_client_updates_total /
        ..._update_errors_total (agent.metrics.processed_updates)."""
        with self._pending_lock:
            pending, self._pending_updates = self._pending_updates, 0
        failed = False
        t0 = time.monotonic()
        try:
            self.reconcile()
        except Exception:  # noqa: BLE001 - one bad object must not stop the agent
            failed = True
            log.error("reconcile failed", exc_info=True)
        took = time.monotonic() - t0
        if took >= SLOW_RECONCILE_S:
            log.warning("slow reconcile pass", event="slowReconcile", seconds=round(took, 3),
                        services=len(self._svc_info))
        if self.metrics:
            self.metrics.reconcile_seconds.observe(took)
            updates, errors = processed_updates(pending, failed)
            if updates:
                self.metrics.updates_total.inc(updates)
            if errors:
                self.metrics.update_errors_total.inc(errors)

    def _load_config(self) -> Optional[Config]:
        resources = [o for inf in self.config_informers for o in inf.items()]
        secrets = {obj_key(s): s for s in self.secrets.items()}
        # parse() is pure: the same objects (by resourceVersion) give the same Config, so a pass
        # woken by a Service or an EndpointSlice does not parse again (it was ~60% of a pass)
        inputs = config_inputs(resources, secrets)
        if inputs is not None and inputs == self._config_inputs:
            return self.config
        try:
            cfg = parse(resources, secrets=secrets)
        except ConfigError as e:
            self._config_stale = self.config is not None
            self._config_inputs = inputs
            if self.metrics:
                self.metrics.config_stale.set(1 if self.config else 0)
            log.error("failed to parse the configuration" + ("; keeping the last good one" if self.config else ""),
                      event="configStale", error=str(e))
            return self.config
        self._config_stale = False
        self._config_inputs = inputs
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
        # crash-held members keep their VIPs (no gratuitous ARP moves a client away and back), but
        # their XDP went quiet with their agent: the node that would win without them answers ARP
        # requests meanwhile, without gratuitous ARP (a stand-in), so a client that has to ask
        # is answered too
        held = (self.membership.held() & members) if self.membership and members else frozenset()
        stand_in: set[tuple[str, str]] = set()
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
        outcomes: dict[tuple[str, str], reasons.Outcome] = {}
        bgp_keys: set[str] = set()          # services whose pool has a BGPAdvertisement
        self._svc_info = {}
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
            if held and decision.node in held:
                alt = election.announcing_node_for(view, nodes, cfg, members - held)
                if alt.node == self.node:
                    for ifname in election.filter_interfaces(ifaces, alt.interfaces) or ():
                        for ip in ips:
                            want_l2[(str(ip), ifname)] = (key, etp_local and self.node not in ready_nodes)
                            stand_in.add((str(ip), ifname))
            self._svc_info[key] = (svc, tuple(str(i) for i in ips), decision.pool or pool)
            protocols = reasons.applicable_protocols(cfg, decision.pool or pool, self.s.enable_bgp)
            if not protocols:
                outcomes[(key, reasons.LAYER2)] = reasons.unadvertised_pool(decision.pool or pool)
            if decision.node is not None and decision.node != self.node:
                moved.update({str(ip): decision.node for ip in ips})
            names = None
            if decision.node == self.node:
                names = election.filter_interfaces(ifaces, decision.interfaces)
                # elected, but none of the advertisement's interfaces here (or usable): nobody
                # answers for this VIP, as in MetalLB (l2_outcome says announceFailed, once)
                if names:
                    misdirect = etp_local and self.node not in ready_nodes
                    for ip in ips:
                        for ifname in names:
                            want_l2[(str(ip), ifname)] = (key, misdirect)
                    l2_status[key] = (tuple(sorted(names)), svc)
            if reasons.LAYER2 in protocols:
                outcomes[(key, reasons.LAYER2)] = reasons.l2_outcome(decision, self.node, view, names,
                                                                     xdp=self.dp is not None)
            bgp_views.append(bgpadv.ServiceView(key, ips, pool, labels, etp_local,
                                                self.node in ready_nodes, has_serving))
            if reasons.BGP in protocols:
                bgp_keys.add(key)
        self._apply_l2(want_l2, moved, ifaces, l2_status, stand_in)
        plan = None
        if self.s.enable_bgp and self.node in nodes:
            plan = self._apply_bgp(cfg, nodes[self.node], bgp_views)
        me = nodes.get(self.node)
        for v in bgp_views:
            if v.key not in bgp_keys:
                continue
            if plan is not None:
                why, peers = plan.reasons.get(v.key), plan.service_peers.get(v.key, frozenset())
            else:       # no BGPPeer selects this node (or it has no Node object yet)
                why = bgpadv.should_announce(cfg, me, v) if me is not None else bgpadv.NODE_EXCLUDED
                peers = frozenset()
            outcomes[(v.key, reasons.BGP)] = reasons.bgp_outcome(why, peers, self._svc_info[v.key][2])
        self._report(outcomes)

    # ---- L2 --------------------------------------------------------------------------------
    def _apply_l2(self, want: dict, moved: dict, ifaces: dict, l2_status: dict,
                  stand_in: frozenset = frozenset()) -> None:
        if self.dp is None:
            return
        self.l2.apply(want, moved, ifaces, stand_in)
        # events, ServiceL2Status and metrics follow the set of services we announce
        for key, (names, svc) in l2_status.items():
            if key not in self.l2_services:
                self._event(svc, "Normal", "nodeAssigned", f"announcing from node \"{self.node}\" with protocol \"layer2\"")
        self.l2_services = set(l2_status)
        self.status.sync_l2({key: names for key, (names, _svc) in l2_status.items()})
        self._sync_announced_metric("layer2", {(k, str(ip)) for (ip, _), (k, _m) in want.items()})

    def _sync_announced_metric(self, protocol: str, current: set) -> None:
        if not self.metrics:
            return
        cur = {(svc, protocol, self.node, ip) for svc, ip in current}
        for change in announcement_changes({(m[1], m[3]) for m in self._announced_metric if m[1] == protocol},
                                           {(m[1], m[3]) for m in cur}):
            self.metrics.announcement_changes.labels(*change).inc()
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
        self.events.post(svc, type_, reason, message)

    # ---- BGP -------------------------------------------------------------------------------
    def _apply_bgp(self, cfg: Config, me, views: list):
        plan = self.bgp.apply(cfg, me, views, self._my_addresses())
        if plan is None:
            return None
        self._sync_announced_metric("bgp", {(k, str(ip)) for k, ps in plan.service_peers.items() if ps
                                            for v in views if v.key == k for ip in v.ips})
        self.status.sync_bgp(plan.service_peers)
        announced = {k for k, ps in plan.service_peers.items() if ps}
        for key in sorted(announced - self.bgp_services):   # as for layer2 (MetalLB posts both)
            svc = self._svc_info.get(key, (None,))[0]
            if svc is not None:
                self._event(svc, "Normal", "nodeAssigned", f"announcing from node \"{self.node}\" with protocol \"bgp\"")
        self.bgp_services = announced
        return plan

    # ---- reasons: logged once per change, Events throttled, /status -------------------------
    def _report(self, outcomes: dict) -> None:
        for ch in self.reasons.update(outcomes):
            key = (ch.service, ch.protocol)
            new = ch.new
            if new is None or new.announced:
                self._event_throttle.drop(key)
                continue
            svc, ips, pool = self._svc_info[ch.service]
            (log.debug if new.elsewhere else log.info)(
                "not announcing service", event="announceFailed" if new.reason == reasons.ANNOUNCE_FAILED
                else "serviceNotAnnounced", ip=list(ips), service=ch.service, protocol=new.protocol,
                reason=new.reason, detail=new.detail, node=self.node, pool=pool,
                was=None if ch.old is None else (ch.old.reason or "announced"))
            ev = reasons.event_for(new, self.node)
            if ev is None:
                self._event_throttle.drop(key)
            else:
                self._event_throttle.offer(key, (svc, *ev))
        for svc, typ, reason, message in self._event_throttle.due(time.monotonic()):
            self._event(svc, typ, reason, message)

    # ---- /status (metalxdp agent status) -------------------------------------------------------
    def status_document(self) -> dict:
        """What ``metalxdp agent status`` shows (``agent.status_report`` describes the shape);
        called from the monitoring server's thread, so it only reads snapshots."""
        from .status_report import bfd_entry, liveness_gate, vip_flags
        now = time.time()
        doc: dict = {"node": self.node, "time": now,
                     "config": {"loaded": self.config is not None,
                                "stale": self._config_stale}}
        speaker, bfd = self.bgp.speaker, self.bgp.bfd
        doc["bgp"] = {"sessions": speaker.sessions() if speaker is not None else [],
                      "speaker": speaker.health() if speaker is not None else None}
        peers = []
        if bfd is not None:
            profiles = self.config.bfd_profiles if self.config else {}
            for info in sorted(bfd.sessions().values(), key=lambda i: i.peer):
                p = profiles.get(info.profile)
                timers = (p.receive_interval_ms, p.transmit_interval_ms, p.detect_multiplier) if p else (0, 0, 0)
                peers.append(bfd_entry(dataclasses.asdict(info), timers, now))
        doc["bfd"] = {"peers": peers}
        if self.membership is not None:
            doc["membership"] = {"enabled": True, "self": self.node, "members": sorted(self.membership.members()),
                                 "states": dict(sorted(self.membership.states().items()))}
        else:
            doc["membership"] = {"enabled": False, "self": self.node, "members": [], "states": {}}
        vips = []
        if self.dp is not None:
            names = {i: n for n, i in local_interfaces().items()}
            doc["xdp"] = {"enabled": True, "programId": self.dp.prog_id, "adopted": self.dp.adopted,
                          "requestedMode": self.dp.xdp_mode, "pinDir": self.dp.bpffs_dir,
                          "interfaces": [{"name": names.get(i, str(i)), "ifindex": i, "mode": m}
                                         for i, m in sorted(self.dp.attached.items())],
                          "liveness": liveness_gate(*self.dp.liveness())}
            flags = {(ip, ifx): f for ip, ifx, f in self.dp.announced()}
            owners = dict(self.l2.announced)
            for (ip, ifx), c in sorted(self.dp.counters().items()):
                ifname = names.get(ifx, str(ifx))
                vips.append({"ip": ip, "interface": ifname, "service": owners.get((ip, ifname)),
                             "flags": vip_flags(flags.get((ip, ifx), 0)), "counters": c})
        else:
            doc["xdp"] = {"enabled": False}
        doc["vips"] = vips
        doc["services"] = [{"service": k, "protocol": p, "announced": o.announced, "reason": o.reason,
                            "detail": o.detail, "ips": list(self._svc_info.get(k, (None, ()))[1])}
                           for (k, p), o in sorted(self.reasons.current.items())]
        return doc

    # ---- metrics source ----------------------------------------------------------------------
    def xdp_counters(self) -> tuple[dict, dict]:
        if self.dp is None:
            return {}, {}
        names = {i: n for n, i in local_interfaces().items()}
        per_vip = {(ip, names.get(ifindex, str(ifindex))): c for (ip, ifindex), c in self.dp.counters().items()}
        return per_vip, self.garp.sent()
