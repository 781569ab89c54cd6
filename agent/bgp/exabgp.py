"""The BGP speaker of one node: drives one ExaBGP 5 process through its ``process`` API.

    speaker = BGPSpeaker(NodeAddresses("node1", ip4, ip6), workdir, netns="mx..-node1")
    speaker.set_peers(active_peers(config, node).values())
    speaker.set(advertisements_for_node(config, node, services))   # peer name -> routes
    speaker.session_states()                                       # peer name -> bool
    speaker.peer_down("router-v4"); speaker.peer_up("router-v4")   # BFD hook
    speaker.close()

Every public method only queues work and returns: one worker thread owns the ExaBGP process,
the API connection and all state, so nothing needs a lock except the small snapshot read by
``session_states``/``announced``.

How it talks to ExaBGP: ExaBGP's API process connects to a Unix socket this driver listens on
(``<workdir>/api.sock``). Started through ``exabgp_timers.py`` (the default), ExaBGP makes that
connection itself, in its own process; under any other ExaBGP command it forks ``api_relay.py``,
which connects and copies lines both ways (same bytes, one process more). We send
``neighbor <addr> announce|withdraw route ...``; ExaBGP answers ``done``/``error`` per command
and sends JSON events (neighbor state connected/up/down with a reason; a NOTIFICATION from
the peer shows up as the reason).

Consistency: ``_announced`` is what the current ExaBGP process holds because we told it.
``set`` diffs the wanted routes against it and sends only the differences. When the process
dies (or the relay reconnects) ``_announced`` is cleared and everything is sent again. A
command ExaBGP rejects (``error``: e.g. a neighbor added by a reload not yet known) is
forgotten from ``_announced`` and retried on the next resync (one second after a reload, and on
every session ``up``).

Peer changes re-render exabgp.conf and send ExaBGP ``reload``: unchanged sessions stay up,
removed peers are closed (NOTIFICATION Cease), new ones are opened. ExaBGP silently drops a
reload that arrives while any peer has updates queued (two BFD sessions coming back 0.1 s apart
did it: the second peer never came back), so after each reload the speaker asks ExaBGP for its
neighbours (``show neighbor json``) and sends the reload again until they are the configured ones. ``peer_down`` (BFD said
the path is dead) takes the peer out of the rendered configuration the same way, so the session
stays down until ``peer_up``.
"""
from __future__ import annotations

import collections
import importlib.util
import ipaddress
import json
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from metalxdp.config.types import BGPPeer, IPNetwork
from metalxdp.log import get_logger

from .advertise import Route
from .config_render import (NodeAddresses, RenderError, announce_command, exabgp_env,
                            local_address, render_exabgp_conf, render_timers, withdraw_command)
from . import exabgp_inproc
from .exabgp_inproc import InProcessExaBGP
from .exabgp_timers import API_TOKEN_ENV, HELLO
from .metrics import BGPMetrics

RELAY = Path(__file__).resolve().parent / "api_relay.py"
# the relay imports only the standard library: no site (-S) and no PYTHON* environment (-I)
# keep it at ~10 MB RSS instead of ~14 (it runs on every node for the agent's life)
RELAY_FLAGS = ("-I", "-S")
TIMERS_WRAPPER = Path(__file__).resolve().parent / "exabgp_timers.py"
TIMERS_ENV = "METALXDP_EXABGP_TIMERS"    # exabgp_timers.ENV (that file imports nothing of ours)
API_SOCKET_ENV = "METALXDP_EXABGP_API_SOCKET"  # exabgp_timers.API_SOCKET_ENV: no relay process
TICK = 0.2                  # seconds between health checks of the process when idle
RESYNC_AFTER_RELOAD = 1.0   # seconds: ExaBGP applies a reload on its next loop turn
# seconds between checks (``show neighbor json``) that a reload reached ExaBGP, and re-sends of
# one that did not: ExaBGP drops a reload that arrives while a peer has updates queued
# (reactor/loop.py: the signal is re-armed before its ``_pending_adjribout`` check)
RELOAD_VERIFY = (1.0, 1.0, 2.0, 5.0)
RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before restart n
STABLE_AFTER = 30.0         # a process alive this long resets the restart backoff
CRASH_LOOP_AFTER = 3        # this many restarts without a stable run is a crash loop


def restart_delay(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts`` (0-based) of a run of failures."""
    return RESTART_BACKOFF[min(restarts, len(RESTART_BACKOFF) - 1)]
HELLO_WAIT = 2.0            # seconds a new API connection has to send its hello line
HELLO_MAX = 128             # bytes of it read one by one (the rest is read as lines)
RELAY_WAIT = 5.0            # seconds a started ExaBGP may run without its API relay connecting
# ExaBGP's "down" reason when the peer sent a NOTIFICATION: "notification received (6,2)"
NOTIFICATION_REASON = re.compile(r"notification received \((\d+),\s*(\d+)\)")
AS_TRANS = 23456            # RFC 6793: the 2-octet AS field of a speaker whose AS needs 4 octets
CEASE_CONNECTION_REJECTED = 5  # RFC 4486 Cease subcode sent when we refuse a session
# /proc/net/netstat counters that only move when TCP MD5 signatures disagree
MD5_COUNTERS = ("TCPMD5Failure", "TCPMD5NotFound", "TCPMD5Unexpected")


def default_exabgp() -> list[str]:
    """$METALXDP_EXABGP (a command, split on spaces: a custom build, or a test's stand-in), else
    ExaBGP 5 of the running Python through ``exabgp_timers.py`` (which applies keepaliveTime
    and connectTime), else ``exabgp`` from PATH (those two timers then are ExaBGP's own)."""
    if os.environ.get("METALXDP_EXABGP"):
        return os.environ["METALXDP_EXABGP"].split()
    if importlib.util.find_spec("exabgp") is not None:
        return [sys.executable, str(TIMERS_WRAPPER)]
    return ["exabgp"]


class BGPSpeaker:
    """One node's BGP sessions and announcements, through one ExaBGP process."""

    def __init__(self, node: NodeAddresses, workdir: Path, *, netns: Optional[str] = None,
                 exabgp: Optional[Sequence[str]] = None, registry=None,
                 not_established_after: float = 15.0, log_component: str = "agent",
                 in_process: bool = False):
        """node: the node's name and addresses (default session source addresses).
        workdir: private directory for exabgp.conf, exabgp.log and the API socket.
        netns: run ExaBGP inside this network namespace (``ip netns exec``); None = ours.
        exabgp: the ExaBGP command (default: the venv's ``exabgp``).
        registry: prometheus registry for the metrics (default: the global one).
        not_established_after: seconds after which a configured session that never came up
            is reported (with the MD5 counters of the namespace when the peer has a password).
        in_process: run ExaBGP's reactor on a thread of this process (``exabgp_inproc``) rather
            than as a process: what the agent does. Only without ``netns`` and ``exabgp``, with
            ExaBGP importable, and for one speaker per process; otherwise a process is started.
        """
        self.node = node
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.netns = netns
        self.in_process = bool(in_process and netns is None and exabgp is None
                               and not os.environ.get("METALXDP_EXABGP") and exabgp_inproc.available())
        self.exabgp = list(exabgp or default_exabgp())
        self.metrics = BGPMetrics(registry)
        self.log = get_logger(log_component)
        self.not_established_after = not_established_after
        self.conf_path = self.workdir / "exabgp.conf"
        self.timers_path = self.workdir / "timers.json"
        self.log_path = self.workdir / "exabgp.log"
        self.sock_path = self.workdir / "api.sock"

        self._q: "queue.Queue[tuple]" = queue.Queue()
        self._lock = threading.Lock()          # guards the snapshots below and _peers_queued
        self._states_snapshot: dict[str, bool] = {}
        self._announced_snapshot: dict[str, frozenset[Route]] = {}
        self._sessions_snapshot: list[dict] = []

        # --- worker-owned state ---
        self._want_peers: dict[str, BGPPeer] = {}
        self._peers_queued: Optional[dict[str, BGPPeer]] = None   # the last set_peers (caller side)
        self._admin_down: set[str] = set()
        self._desired: dict[str, frozenset[Route]] = {}
        self._owners: Mapping[IPNetwork, Sequence[str]] = {}
        self._announced: dict[str, dict[IPNetwork, Route]] = {}
        self._loaded_peers: dict[str, BGPPeer] = {}   # what the running process was given
        self._rendered: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._proc_started = 0.0
        self._restarts = 0
        self._next_start = 0.0
        self._last_exit: Optional[str] = None
        self._crash_looping = False
        self._health_snapshot: dict = {"running": False, "restarts": 0, "crashLooping": False,
                                       "lastExit": None, "nextStartIn": 0.0}
        self._conn: Optional[socket.socket] = None
        self._api_token: Optional[str] = None    # the hello the running ExaBGP's API sends
        self._pending: collections.deque = collections.deque()  # (peer, kind, route) per command
        self._states: dict[str, bool] = {}
        self._up_since: dict[str, float] = {}   # peer -> time.time() the session came up
        self._down_since: dict[str, float] = {}
        self._reported: set[str] = set()
        self._refused_asn: set[str] = set()   # dynamicASN external peers whose OPEN had our AS
        # peer -> when a reload changed its definition: ExaBGP re-creates such a neighbour on
        # its next loop turn, and what we sent it before that may not reach the new one
        self._reannounce: dict[str, float] = {}
        self._open_checked: set[str] = set()  # ... whose OPEN in this session had another AS
        self._unroutable: set[tuple] = set()  # (peer, prefix) with no next hop of its family (logged once)
        self._resync_at: Optional[float] = None
        self._verify_at: Optional[float] = None   # when to check that the last reload took
        self._verify_tries = 0
        self._extra_seen: list[str] = []
        self._closing = False
        self._md5_base: dict[str, int] = {}

        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.sock_path))
        self._listener.listen(4)
        threading.Thread(target=self._accept_loop, name=f"bgp-accept-{node.name}", daemon=True).start()
        self._worker = threading.Thread(target=self._run, name=f"bgp-{node.name}", daemon=True)
        self._worker.start()

    # ---- public API: queue and return ---------------------------------------------------
    def set_peers(self, peers: Iterable[BGPPeer]) -> None:
        """The BGPPeers active on this node (all of them: the speaker drops none). The same
        peers as last time are not queued again: every reconcile pass calls this, and each
        "peers" item rendered ExaBGP's configuration and read the timers file on the worker,
        ahead of the pass's own announcements."""
        want = {p.name: p for p in peers}
        with self._lock:
            if want == self._peers_queued:
                return
            self._peers_queued = want
        self._q.put(("peers", want))

    def set(self, advertisements: Mapping[str, Iterable[Route]],
            owners: Optional[Mapping[IPNetwork, Sequence[str]]] = None) -> None:
        """Peer name -> routes to announce to it (peers missing from the map get none).
        owners (optional, for the logs): prefix -> service keys announcing it."""
        ads = {p: frozenset(r) for p, r in advertisements.items()}
        self._q.put(("set", ads, dict(owners or {})))

    def peer_down(self, peer_name: str) -> None:
        """Administratively close ``peer_name``'s session and keep it closed (BFD down)."""
        self._q.put(("admin", peer_name, True))

    def peer_up(self, peer_name: str) -> None:
        """Undo ``peer_down``: the session is opened again and its routes re-sent."""
        self._q.put(("admin", peer_name, False))

    def session_states(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._states_snapshot)

    def health(self) -> dict:
        """The ExaBGP process as ``agent status`` shows it: running (and driven by its API
        relay), restarts in the current run of failures, crash loop, last exit, seconds until
        the next start while backing off."""
        with self._lock:
            return dict(self._health_snapshot)

    def sessions(self) -> list[dict]:
        """Every configured session as ``agent status`` shows it (FRR's ``show bgp summary``
        columns): peer, address, myASN, peerASN, state ("Established", "Idle (Admin)" while BFD
        holds it down, else "Active"), upSince (time.time(), None when not up), prefixesSent
        (prefixes announced and acknowledged or in flight)."""
        with self._lock:
            return [dict(s) for s in self._sessions_snapshot]

    def announced(self) -> dict[str, frozenset[Route]]:
        """Peer name -> routes handed to ExaBGP and acknowledged or in flight (for tests)."""
        with self._lock:
            return dict(self._announced_snapshot)

    def close(self, timeout: float = 10.0, restarting: bool = False) -> None:
        """Stop ExaBGP (its sessions end with a Cease NOTIFICATION) and the worker.
        ``restarting`` (a new agent follows on this node): end it with SIGKILL instead, so the
        TCP sessions drop without a NOTIFICATION; a router that negotiated graceful restart
        (enableGracefulRestart) then keeps our routes as stale until the next agent's
        End-of-RIB (RFC 4724 §4.2), and one that did not withdraws them as before."""
        if not self._worker.is_alive():
            return
        self._q.put(("close", restarting))
        self._worker.join(timeout)
        try:
            self._listener.close()
            self.sock_path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "BGPSpeaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- socket plumbing (threads that only feed the queue) -----------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return   # listener closed
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        token, first = read_hello(conn)
        self._q.put(("conn", conn, token))
        try:
            with conn.makefile("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if first:
                        line, first = first + line, ""
                    self._q.put(("line", conn, line.rstrip("\n")))
            if first:
                self._q.put(("line", conn, first))
        except (OSError, ValueError):
            pass
        self._q.put(("eof", conn))

    # ---- worker -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=TICK)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    if item[0] == "close":
                        self._shutdown(restarting=item[1])
                        return
                    self._handle(item)
                self._tick()
            except Exception as e:  # noqa: BLE001 - the speaker must survive any one bad event
                self.log.error(f"BGP speaker error: {e}", exc_info=True, event="bgpSpeakerError")

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "peers":
            self._want_peers = item[1]
            self._apply_peers()
            self._publish()
        elif kind == "set":
            self._desired, self._owners = item[1], item[2]
            self._sync()
        elif kind == "admin":
            name, down = item[1], item[2]
            if down and name not in self._admin_down:
                self._admin_down.add(name)
                self.log.info("BGP session administratively down (BFD)", event="sessionDown",
                              peer=name, reason="administratively down")
                self._apply_peers()
            elif not down and name in self._admin_down:
                self._admin_down.discard(name)
                self.log.info("BGP session administratively up again (BFD)", event="peerAdded",
                              peer=name)
                self._apply_peers()
            self._publish()
        elif kind == "conn":
            conn, token = item[1], item[2]
            if token is not None and token != self._api_token:
                # the API of an ExaBGP stopped since (a restart moments after a start): taken
                # for the new one's, its end restarted the new one, whose own late connection
                # then restarted the next (in-process, every 0.1 s: found by test_bfd_lab)
                self.log.info("API connection of a stopped ExaBGP refused",
                               event="exabgpStaleApi")
                _close(conn)
                return
            if self._conn is not None:
                _close(self._conn)
            self._conn = conn
            self._pending.clear()
            self._announced = {}   # a new relay means a new (or respawned) API client: resend
            self._sync()
        elif kind == "line" and item[1] is self._conn:
            self._on_line(item[2])
        elif kind == "eof" and item[1] is self._conn:
            self._conn = None
            self._pending.clear()
            if self._alive() and not self._closing:
                # the relay died but ExaBGP lives on with routes we can no longer withdraw
                # through it: start over from a clean process rather than guess its RIB
                self.log.warning("ExaBGP's API relay went away; restarting ExaBGP",
                                 event="exabgpDied", reason="api relay closed")
                self._stop_process()
                # a failure like an exit: counted, backed off, and seen by health()
                self._schedule_restart(time.monotonic(), "api relay closed")
            self._announced = {}

    def _effective_peers(self) -> dict[str, BGPPeer]:
        return {n: p for n, p in sorted(self._want_peers.items()) if n not in self._admin_down}

    def _apply_peers(self) -> None:
        peers = self._effective_peers()
        usable = {}
        for n, p in peers.items():
            try:
                local_address(p, self.node)
                usable[n] = p
            except RenderError as e:
                self.log.error(str(e), event="peerNotUsable", peer=n)
        for gone in set(self._loaded_peers) - set(usable):
            self._session_lost(gone, "peer removed from configuration" if gone not in self._admin_down
                               else "administratively down")
            self._announced.pop(gone, None)
            self._reannounce.pop(gone, None)
            self._states.pop(gone, None)
            self._down_since.pop(gone, None)
            self.metrics.forget(str(self._loaded_peers[gone].peer_address))
            if gone not in self._admin_down:
                self.log.info("peer removed", event="peerRemoved", peer=gone)
        for new in set(usable) - set(self._loaded_peers):
            self._announced[new] = {}
            self._states[new] = False
            self._down_since[new] = time.monotonic()
            self._reported.discard(new)
            self.metrics.set_session(str(usable[new].peer_address), False)
            self.log.info("peer added", event="peerAdded", peer=new, address=str(usable[new].peer_address))
        # ExaBGP's reload keeps a running session's capabilities: a peer whose families
        # changed (dualStackAddressFamily set or cleared) needs a new session to negotiate them
        refamilied = [n for n in usable if n in self._loaded_peers
                      and usable[n].families() != self._loaded_peers[n].families()]
        changed = [n for n in usable if n in self._loaded_peers and usable[n] != self._loaded_peers[n]]
        self._loaded_peers = usable
        self._publish()
        if not usable:
            self._stop_process()
            self._rendered = None
            return
        # the timers ExaBGP's configuration cannot hold: read by exabgp_timers.py when used,
        # so they are written whether or not exabgp.conf changes
        timers = render_timers(list(usable.values()))
        if not self.timers_path.exists() or self.timers_path.read_text() != timers:
            tmp = self.timers_path.with_suffix(".tmp")
            tmp.write_text(timers)
            os.replace(tmp, self.timers_path)
        conf = render_exabgp_conf(list(usable.values()), self.node,
                                  [sys.executable, *RELAY_FLAGS, str(RELAY), str(self.sock_path)])
        if conf == self._rendered:
            # running on it already, or dead and due for a restart on it: _tick starts it when
            # its back-off has passed (resetting the back-off here, on every unchanged apply,
            # made a crash-looping ExaBGP restart in a tight loop: found by the chaos test)
            return
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(conf)
        os.replace(tmp, self.conf_path)
        self._rendered = conf
        if self._alive():
            # the API command keeps the order with the announces that follow
            if not self._send_raw("reload"):
                # no API relay yet: the process started moments ago and holds no session worth
                # keeping. SIGUSR1 would kill it if ExaBGP has not installed its handler yet
                # (seen when BFD brought two peers back 0.1 s apart: exit code -10), so start it
                # again on the new configuration instead
                self._stop_process()
                self._next_start = 0.0
                return
            self._resync_at = time.monotonic() + RESYNC_AFTER_RELOAD
            self._verify_tries = 0
            self._verify_at = time.monotonic() + RELOAD_VERIFY[0]
            for n in changed:
                # ExaBGP applies the reload on its next loop turn, after the commands that
                # follow it here: an announce (an IPv6 VIP on a peer that just gained IPv6) went
                # to the neighbour about to be replaced and was lost (CI, 1 run in 3 locally).
                # The session it then re-establishes gets everything again.
                self._reannounce[n] = time.monotonic()
            for n in refamilied:
                # Cease / Other Configuration Change (RFC 4486): reconnects with the new families
                self._send_raw(f"neighbor {usable[n].peer_address} teardown 6", n, "teardown")
                self.log.info("BGP session reset: its address families changed", event="peerReset",
                              peer=n, families=sorted(usable[n].families()))
            self._sync()
        else:
            self._next_start = 0.0   # start at the next tick

    # ---- the process --------------------------------------------------------------------
    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start_process(self) -> None:
        env = dict(os.environ)
        # a link-local cannot be bound without its scope, which exabgp_tcp_bind cannot carry:
        # unnumbered sessions are opened by us only (source-interface), never accepted
        binds = {a for a in (local_address(p, self.node) for p in self._loaded_peers.values())
                 if not a.is_link_local}
        env.update(exabgp_env(binds))
        env[TIMERS_ENV] = str(self.timers_path)
        # the wrapper connects ExaBGP's API to our socket in its own process; the relay in
        # exabgp.conf runs only under an ExaBGP started some other way ($METALXDP_EXABGP)
        env[API_SOCKET_ENV] = str(self.sock_path)
        # the API connection of this start says so in its first line (see exabgp_timers)
        self._api_token = env[API_TOKEN_ENV] = secrets.token_hex(8)
        argv = [*self.exabgp, "server", str(self.conf_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self._proc = self._start_in_process(env) if self.in_process else None
        if self._proc is None:
            with open(self.log_path, "ab") as logf:
                logf.write(f"--- starting {' '.join(argv)} at {time.strftime('%H:%M:%S')}\n".encode())
                logf.flush()
                self._proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env,
                                              start_new_session=True, cwd=self.workdir)
        self._proc_started = time.monotonic()
        self._reannounce.clear()    # a new process reads the configuration before any command
        self._md5_base = {}
        self._md5_base = self._md5_counters()   # the namespace may have older MD5 traffic
        now = time.monotonic()
        for n in self._loaded_peers:
            self._down_since[n] = now
            self._reported.discard(n)
        self.log.info("ExaBGP started", event="exabgpStarted", pid=self._proc.pid,
                      peers=sorted(self._loaded_peers), restarts=self._restarts,
                      inProcess=isinstance(self._proc, InProcessExaBGP))

    def _start_in_process(self, env: dict) -> Optional["InProcessExaBGP"]:
        """ExaBGP's reactor on a thread of ours (None: it cannot be, a process is started)."""
        with open(self.log_path, "ab") as logf:
            logf.write(f"--- starting ExaBGP in process {os.getpid()} on {self.conf_path} "
                       f"at {time.strftime('%H:%M:%S')}\n".encode())
        # the reactor stopped a moment ago may still be on its last loop turn (it holds the
        # listening socket: a process started now could not bind it, found by tests/e2e)
        exabgp_inproc.wait_for_previous(5.0)
        try:
            return InProcessExaBGP(self.conf_path, env, timers_path=self.timers_path,
                                   api_socket=self.sock_path, log_path=self.log_path)
        except RuntimeError as e:
            # another speaker of this process runs one (one reactor per process): a process
            self.log.warning(f"ExaBGP cannot run in this process ({e}); starting it as a process",
                             event="exabgpInProcessUnavailable", reason=str(e))
            self.in_process = False
            return None

    def _stop_process(self, signals=None) -> None:
        if self._proc is None:
            return
        p, self._proc = self._proc, None
        if isinstance(p, InProcessExaBGP):
            # SIGTERM's path in ExaBGP, asked for through its signal state. ``signals`` (SIGKILL
            # when a new agent follows) cannot apply to a thread and need not: ExaBGP's shutdown
            # closes the TCP sessions without a NOTIFICATION, as a killed process's end does, so
            # a router with graceful restart keeps the routes as stale (tests/e2e rollout test)
            if not p.stop(5.0):
                self.log.error("ExaBGP's reactor did not stop within 5s", event="exabgpDied",
                               reason="reactor did not stop")
            signals = ()
        for sig, wait in signals if signals is not None else ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the relay's process group is ExaBGP's: it is gone too
        for n in list(self._states):
            self._session_lost(n, "ExaBGP stopped")
        self._announced = {}
        self._forget_api()

    def _forget_api(self) -> None:
        """The ExaBGP that the API connection and token belonged to is gone: its connection
        (whose end may still be queued) is not the next one's, nor is a late connection of it."""
        self._api_token = None
        if self._conn is not None:
            _close(self._conn)
            self._conn = None
        self._pending.clear()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            pgid, inproc, self._proc = self._proc.pid, isinstance(self._proc, InProcessExaBGP), None
            try:   # its API relay (same process group) may outlive it: end the whole group
                if not inproc:
                    os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.log.error(f"ExaBGP exited with code {code}; restarting it and re-announcing",
                           event="exabgpDied", code=code, log=str(self.log_path))
            for n in list(self._states):
                self._session_lost(n, "ExaBGP died")
            self._announced = {}
            self._forget_api()
            self._schedule_restart(now, f"exit code {code}")
        if self._proc is None and self._loaded_peers and not self._closing and now >= self._next_start:
            if self._rendered is None or not self.conf_path.exists():
                self._apply_peers()
            self._start_process()
        if self._proc is not None and now - self._proc_started > STABLE_AFTER and self._restarts:
            self._restarts = 0
            if self._crash_looping:
                self._crash_looping = False
                self.log.info("ExaBGP is stable again", event="exabgpStable")
        self._publish_health(now)
        if (self._alive() and self._conn is None and not self._closing
                and now - self._proc_started > RELAY_WAIT):
            # seen once under load after a SIGKILL: the new ExaBGP held its sessions but its
            # relay never reached us, so nothing was announced and nothing could be withdrawn.
            # A process we cannot drive is restarted rather than left holding sessions.
            self.log.warning(f"ExaBGP's API relay did not connect within {RELAY_WAIT:.0f}s; "
                             "restarting ExaBGP", event="exabgpDied", reason="api relay not connected",
                             log=str(self.log_path))
            self._stop_process()
            self._schedule_restart(now, "api relay not connected")
        if self._resync_at is not None and now >= self._resync_at:
            self._resync_at = None
            self._sync()
        if self._verify_at is not None and now >= self._verify_at:
            self._verify_at = None
            if self._alive():
                self._send_raw("show neighbor json", "", "neighbors")
        self._check_not_established(now)

    def _schedule_restart(self, now: float, why: str) -> None:
        """Back off before the next start (RESTART_BACKOFF); a run of CRASH_LOOP_AFTER failures
        is reported once (log event, metric, ``health()``) until a process runs STABLE_AFTER."""
        delay = restart_delay(self._restarts)
        self._restarts += 1
        self._next_start = now + delay
        self._last_exit = why
        self.metrics.speaker_restarts.inc()
        if self._restarts >= CRASH_LOOP_AFTER and not self._crash_looping:
            self._crash_looping = True
            self.log.error(f"ExaBGP is crash-looping ({self._restarts} failures in a row, last: "
                           f"{why}); backing off up to {RESTART_BACKOFF[-1]:.0f}s between starts. "
                           f"Layer2 announcements are not affected. See {self.log_path}",
                           event="exabgpCrashLooping", restarts=self._restarts, reason=why,
                           log=str(self.log_path))

    def _publish_health(self, now: float) -> None:
        running = self._alive() and self._conn is not None
        h = {"running": running, "restarts": self._restarts, "crashLooping": self._crash_looping,
             "lastExit": self._last_exit,
             "nextStartIn": round(max(0.0, self._next_start - now), 1) if self._proc is None else 0.0}
        self.metrics.speaker_up.set(1 if running else 0)
        self.metrics.speaker_crash_looping.set(1 if self._crash_looping else 0)
        with self._lock:
            self._health_snapshot = h

    def _shutdown(self, restarting: bool = False) -> None:
        self._closing = True
        self._stop_process(signals=((signal.SIGKILL, 2.0),) if restarting else None)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._publish()

    # ---- sending ------------------------------------------------------------------------
    def _send_raw(self, line: str, peer: str = "", kind: str = "raw",
                  route: Optional[Route] = None) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.sendall((line + "\n").encode())
        except OSError:
            return False
        self._pending.append((peer, kind, route, line))
        return True

    def _sync(self) -> None:
        """Send ExaBGP the difference between the wanted and the announced routes."""
        if self._conn is None:
            return
        for name, peer in self._loaded_peers.items():
            want = {r.prefix: r for r in self._desired.get(name, frozenset())}
            if peer.dynamic_asn == "external" and name not in self._open_checked:
                # ExaBGP sends what it holds the moment a session is up, before we could
                # refuse it: a dynamicASN external peer gets routes only once its OPEN passed
                want = {}
            have = self._announced.setdefault(name, {})
            addr = str(peer.peer_address)
            for prefix in sorted(set(have) - set(want), key=_net_key):
                route = have.pop(prefix)
                if self._send_raw(withdraw_command(peer, route), name, "withdraw", route):
                    self.metrics.update_sent(addr)
                    self.log.info("withdrawn", event="serviceWithdrawn", peer=name, prefix=str(prefix),
                                  services=list(self._owners.get(prefix, ())))
            for prefix, route in sorted(want.items(), key=lambda kv: _net_key(kv[0])):
                if have.get(prefix) == route:
                    continue
                try:
                    cmd = announce_command(peer, route, self.node)
                except RenderError as e:
                    if (name, prefix) not in self._unroutable:
                        self._unroutable.add((name, prefix))
                        self.log.error(str(e), event="peerNotUsable", peer=name, prefix=str(prefix))
                    continue
                if self._send_raw(cmd, name, "announce", route):
                    have[prefix] = route
                    self.metrics.update_sent(addr)
                    self.log.info("announced", event="serviceAnnounced", peer=name, prefix=str(prefix),
                                  services=list(self._owners.get(prefix, ())),
                                  communities=[c.value for c in route.communities],
                                  localPref=route.local_pref)
            self.metrics.set_announced(addr, len(have))
        self._publish()

    # ---- receiving ----------------------------------------------------------------------
    def _on_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line in ("done", "error"):
            if not self._pending:
                return
            peer, kind, route, cmd = self._pending.popleft()
            if line == "error":
                self.log.warning(f"ExaBGP rejected: {cmd}", event="exabgpCommandError", peer=peer)
                # forget it so that the next resync sends it again
                if kind == "announce" and route is not None:
                    have = self._announced.get(peer, {})
                    if have.get(route.prefix) == route:
                        del have[route.prefix]
                        self._resync_at = self._resync_at or time.monotonic() + RESYNC_AFTER_RELOAD
            return
        if line.startswith("["):
            self._on_neighbors(line)
            return
        if not line.startswith("{"):
            return   # "reload in progress" and similar chatter
        try:
            # ExaBGP writes the Python None of a "peer-as auto" neighbour as-is: make it JSON
            msg = json.loads(line.replace('"peer": None', '"peer": null'))
        except ValueError:
            return
        typ = msg.get("type")
        neigh = msg.get("neighbor", {})
        addr = (neigh.get("address") or {}).get("peer")
        name = self._peer_name(addr)
        if name is None:
            return
        if typ == "open" and neigh.get("direction") == "receive":
            self._check_dynamic_asn(name, neigh.get("open") or {})
            return
        if typ == "state":
            state = neigh.get("state")
            if state == "up" and name in self._refused_asn:
                # dynamicASN external and the router is in our own AS: FRR's "remote-as
                # external" refuses such a peer; ExaBGP's "peer-as auto" cannot, so we close it
                self._send_raw(f"neighbor {addr} teardown {CEASE_CONNECTION_REJECTED}", name, "teardown")
            elif state == "up":
                self._session_up(name)
            elif state == "down":
                reason = neigh.get("reason") or "down"
                m = NOTIFICATION_REASON.match(reason)
                if m:
                    # the peer closed the session itself (e.g. Cease/Administrative Shutdown)
                    self.log.warning(f"NOTIFICATION received from peer: {reason}",
                                     event="peerNotification", peer=name,
                                     code=int(m.group(1)), subcode=int(m.group(2)))
                self._session_lost(name, reason)

    def _check_dynamic_asn(self, name: str, open_msg: dict) -> None:
        """dynamicASN external: a router presenting the AS we present is refused (logged once)."""
        peer = self._loaded_peers.get(name)
        if peer is None or peer.dynamic_asn != "external":
            return
        asn = open_asn(open_msg)
        if asn == peer.local_as:
            self._open_checked.discard(name)
            if name not in self._refused_asn:
                self.log.warning(f"peer presents AS {asn}, our own, but dynamicASN is external: "
                                 f"session refused; set dynamicASN internal or fix the router's AS",
                                 event="peerASNRefused", peer=name, asn=asn)
            self._refused_asn.add(name)
        else:
            self._refused_asn.discard(name)
            self._open_checked.add(name)   # _session_up then announces

    def _on_neighbors(self, line: str) -> None:
        """``show neighbor json``'s answer: if ExaBGP's neighbours are not the configured ones,
        the last reload was dropped (see the module docstring): send it again, and check again."""
        try:
            have = {str((n.get("peer") or {}).get("address")) for n in json.loads(line)}
        except (ValueError, AttributeError, TypeError):
            return
        want = {str(p.peer_address) for p in self._loaded_peers.values()}
        if have == want or not self._alive():
            self._extra_seen = []
            return
        missing, extra = sorted(want - have), sorted(have - want)
        if not missing and extra != self._extra_seen:
            # a removed neighbour stays listed until its session has closed: lost only if it
            # is still there at the next check
            self._extra_seen = extra
            self._verify_at = time.monotonic() + RELOAD_VERIFY[-1]
            return
        self._extra_seen = []
        self._verify_tries += 1
        self.log.warning("ExaBGP did not apply the last reload; sending it again",
                         event="exabgpReloadLost", missing=missing, extra=extra,
                         attempt=self._verify_tries)
        self.metrics.reloads_lost.inc()
        if self._send_raw("reload"):
            self._resync_at = time.monotonic() + RESYNC_AFTER_RELOAD
            self._verify_at = time.monotonic() + RELOAD_VERIFY[min(self._verify_tries,
                                                                    len(RELOAD_VERIFY) - 1)]

    def _peer_name(self, addr: Optional[str]) -> Optional[str]:
        if not addr:
            return None
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        for n, p in self._loaded_peers.items():
            if p.peer_address == ip:
                return n
        return None

    def _session_up(self, name: str) -> None:
        first = not self._states.get(name)
        if first:
            self._states[name] = True
            self._up_since[name] = time.time()
            self._reported.discard(name)
            peer = self._loaded_peers[name]
            self.metrics.set_session(str(peer.peer_address), True)
            self._publish()      # as _session_lost: the log follows what session_states() says
            self.log.info("BGP session established", event="sessionUp", peer=name,
                          address=str(peer.peer_address))
        since = self._reannounce.get(name)
        if since is not None:
            # the first session of a re-created neighbour: send it everything. A session up
            # within RESYNC_AFTER_RELOAD may still be the old neighbour's; keep the mark then
            self._announced[name] = {}
            if time.monotonic() - since > RESYNC_AFTER_RELOAD:
                del self._reannounce[name]
        self._sync()   # retries anything ExaBGP refused before it knew the neighbor
        peer = self._loaded_peers.get(name)
        if first and peer is not None and peer.enable_graceful_restart:
            # manual-eor (config_render): End-of-RIB only after our routes, so a restarting
            # node's stale routes are never flushed before the fresh ones reach the router
            for v in sorted(peer.families()):
                self._send_raw(f"neighbor {peer.peer_address} announce eor ipv{v} unicast", name, "eor")

    def _session_lost(self, name: str, reason: str) -> None:
        was_up = bool(self._states.get(name))
        if was_up:
            self._down_since[name] = time.monotonic()
        if name in self._states:
            self._states[name] = False
        self._up_since.pop(name, None)
        if name in self._open_checked:
            self._open_checked.discard(name)
            self._sync()    # withdraw from ExaBGP's RIB: the next OPEN is checked again
        peer = self._loaded_peers.get(name)
        if peer is not None:
            self.metrics.set_session(str(peer.peer_address), False)
        self._publish()
        if was_up:
            # logged once session_states() and the metric say so (a reader of the log who asks
            # the speaker then got "up": test_router_closes_session failed on it in CI)
            self.log.info("BGP session down", event="sessionDown", peer=name, reason=reason)

    def _check_not_established(self, now: float) -> None:
        """A session that never comes up is silent in ExaBGP: say so once, with the likely
        cause. A TCP MD5 mismatch drops segments in the kernel, so the namespace's MD5
        counters are the evidence."""
        if self._proc is None:
            return
        for name, peer in self._loaded_peers.items():
            if self._states.get(name) or name in self._reported:
                continue
            since = self._down_since.get(name, now)
            if now - since < self.not_established_after:
                continue
            self._reported.add(name)
            md5 = self._md5_counters()
            if peer.password or any(md5.values()):
                cause = ("TCP MD5 signatures rejected in this node's namespace "
                         f"({', '.join(f'{k}={v}' for k, v in md5.items() if v) or 'no counter moved'}); "
                         "check that spec.password/passwordSecret matches the router's password")
                reason = "md5PasswordMismatch" if any(md5.values()) else "notEstablished"
            else:
                cause = "check the peer's address, AS numbers and that it is configured for this node"
                reason = "notEstablished"
            self.log.error(f"BGP session to {peer.peer_address} not established after "
                           f"{now - since:.0f}s: {cause}", event="sessionDown", peer=name,
                           reason=reason, md5Counters=md5)

    def _md5_counters(self) -> dict[str, int]:
        """TcpExt MD5 counters of ExaBGP's network namespace (``/proc/<pid>/net/netstat``),
        counted from the process start."""
        pid = self._proc.pid if self._proc else os.getpid()
        try:
            text = Path(f"/proc/{pid}/net/netstat").read_text()
        except OSError:
            return {}
        lines = text.splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            if head.startswith("TcpExt:"):
                d = dict(zip(head.split()[1:], vals.split()[1:]))
                return {k: int(d.get(k, 0)) - self._md5_base.get(k, 0) for k in MD5_COUNTERS}
        return {}

    def _publish(self) -> None:
        with self._lock:
            self._states_snapshot = {n: bool(self._states.get(n)) for n in self._loaded_peers}
            self._announced_snapshot = {n: frozenset(self._announced.get(n, {}).values())
                                        for n in self._loaded_peers}
            self._sessions_snapshot = [
                {"peer": n, "address": str(p.peer_address), "myASN": p.my_asn, "peerASN": p.peer_asn,
                 **({"localASN": p.local_asn} if p.local_asn else {}),
                 **({"dynamicASN": p.dynamic_asn} if p.dynamic_asn else {}),
                 "state": "Established" if self._states.get(n)
                 else "Idle (Admin)" if n in self._admin_down else "Active",
                 "upSince": self._up_since.get(n) if self._states.get(n) else None,
                 "prefixesSent": len(self._announced.get(n, {}))}
                for n, p in sorted(self._want_peers.items())]


def read_hello(conn: socket.socket, wait: float = HELLO_WAIT) -> tuple[Optional[str], str]:
    """The token in an API connection's ``metalxdp-hello <token>`` line, and what it read that
    was not one (an ExaBGP or relay that sends none: accepted as before, without a token)."""
    first = b""
    try:
        conn.settimeout(wait)
        while not first.endswith(b"\n") and len(first) < HELLO_MAX:
            b = conn.recv(1)
            if not b:
                break
            first += b
        conn.settimeout(None)
    except OSError:
        pass
    text = first.decode("utf-8", errors="replace")
    if text.startswith(HELLO + " ") and text.endswith("\n"):
        return text[len(HELLO) + 1:].strip() or None, ""
    return None, text


def _close(conn: socket.socket) -> None:
    """Close an API connection so its reader thread sees the end now (a bare close() leaves
    the descriptor open while the reader's file object holds it)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def open_asn(open_msg: dict) -> Optional[int]:
    """The AS number in an OPEN as ExaBGP reports it: the 4-octet AS capability (RFC 6793)
    when the 2-octet field holds AS_TRANS, else that field."""
    asn = open_msg.get("asn")
    if asn == AS_TRANS:
        for cap in (open_msg.get("capabilities") or {}).values():
            if isinstance(cap, dict) and "asn4" in cap:
                return int(cap["asn4"])
    return int(asn) if isinstance(asn, int) else None


def _net_key(n: IPNetwork) -> tuple:
    return (n.version, n.network_address, n.prefixlen)
