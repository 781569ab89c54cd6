"""ExaBGP's reactor on a thread of the agent: one Python interpreter per node instead of two.

    h = InProcessExaBGP(conf_path, env, timers_path=..., api_socket=..., log_path=...)
    h.poll()          # None while the reactor runs, else its exit code (as Popen.poll)
    h.stop(5.0)       # ExaBGP's own shutdown: its sessions close, its API connection ends

What BGPSpeaker uses of a ``subprocess.Popen`` of ``exabgp_timers.py``, without the process.
The bytes on the agent's API socket are the same: ExaBGP's ``process ctl`` is attached to it
by ``exabgp_timers.SocketHelper`` exactly as in the separate process, so everything above the
socket (acks, JSON events, resyncs, restarts on EOF) is unchanged. Measured (bench/peer_*):
an ExaBGP process is ~29 MB RSS on its own, ExaBGP's modules loaded into the agent ~8 MB, and a
withdraw no longer waits for a second process to be scheduled.

ExaBGP is written to own its process, so running it here changes four things, at start:
- its settings come from ``exabgp_*`` environment variables, read once by ``Env.setup``: they
  are set in ``os.environ`` and read again at every start (a restart may bind other addresses);
- it installs signal handlers, which only the main thread may: ``Signal`` is replaced by one
  that installs none; ``stop()`` asks for ExaBGP's own shutdown as SIGTERM would;
- it logs through ``logging`` loggers that propagate to the root logger: they are made not to
  (the agent's log is JSON lines), and write to ``exabgp.log`` as the process did;
- keepaliveTime/connectTime and the API socket are installed as ``exabgp_timers.py`` does in
  its own process (``install``, ``install_api_socket``).

One reactor per process: ExaBGP keeps its settings, log and process table in module globals.
A second start while one runs raises ``RuntimeError`` (BGPSpeaker then starts a process).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Mapping, Optional

from . import exabgp_timers

EXIT_CRASHED = 70           # the reactor raised (EX_SOFTWARE): BGPSpeaker restarts it
_lock = threading.Lock()
_active: Optional["InProcessExaBGP"] = None
_patched = False


def available() -> bool:
    """ExaBGP is importable in this interpreter (the agent's image has it), without importing it."""
    import importlib.util
    return importlib.util.find_spec("exabgp") is not None


def wait_for_previous(timeout: float) -> bool:
    """Wait until no reactor runs in this process (a stopped one finishing its loop turn)."""
    active = _active
    return active is None or active.wait(timeout) is not None


def _patch_once() -> None:
    """ExaBGP's module globals, changed once per process (see the module docstring)."""
    global _patched
    if _patched:
        return
    import importlib
    # the module, not the class of the same name that exabgp.logger exports
    log_option = importlib.import_module("exabgp.logger.option")
    from exabgp.reactor import interrupt, loop

    class ThreadSignal(interrupt.Signal):
        """ExaBGP's signal state without handlers; ``stop_requested`` survives ``rearm``."""
        stop_requested = False

        def rearm(self):
            self.received, self.number = interrupt.Signal.NONE, 0
            if self._pending:
                self.received, self.number = self._pending.pop(0)
            if self.stop_requested:
                self.received = interrupt.Signal.SHUTDOWN

    real_get_logger = log_option.get_logger

    def get_logger(name=None, **kwargs):
        # ExaBGP makes a new logger at every log.init (twice per start): close the handlers
        # of the ones before it, and keep its lines out of the agent's (root) log
        for old in [n for n in logging.Logger.manager.loggerDict if str(n).startswith("ExaBGP ")]:
            lg = logging.getLogger(old)
            for h in list(lg.handlers):
                lg.removeHandler(h)
                h.close()
        lg = real_get_logger(name, **kwargs)
        lg.propagate = False
        return lg

    loop.Signal = ThreadSignal
    log_option.get_logger = get_logger
    _patched = True


class InProcessExaBGP:
    """One ExaBGP reactor on a daemon thread of this process (see the module docstring)."""

    def __init__(self, conf_path: Path, env: Mapping[str, str], *, timers_path: Path,
                 api_socket: Path, log_path: Path):
        global _active
        with _lock:
            if _active is not None and _active.poll() is None:
                raise RuntimeError("an ExaBGP reactor already runs in this process")
            _active = self
        self.pid = os.getpid()
        self.returncode: Optional[int] = None
        self.conf_path, self.log_path = Path(conf_path), Path(log_path)
        self._env, self._timers, self._api = dict(env), Path(timers_path), Path(api_socket)
        self._reactor = None
        self._stop_requested = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._main, name="exabgp", daemon=True)
        self._thread.start()

    # ---- what BGPSpeaker uses of a Popen ------------------------------------------------
    def poll(self) -> Optional[int]:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        self._done.wait(timeout)
        return self.poll()

    def stop(self, timeout: float = 5.0) -> bool:
        """ExaBGP's shutdown (as on SIGTERM): listener and sessions closed, the API connection
        ended. True once the reactor thread has returned (it checks at every loop turn, at
        least every 10 ms)."""
        self._stop_requested = True
        r = self._reactor
        if r is not None:
            r.signal.stop_requested = True
            r.signal.received = r.signal.SHUTDOWN
        if self.wait(timeout) is not None:
            return True
        # stuck (seen once in CI, cause unknown): say where, close what a process's end would
        # have closed (port 179, the sessions, the API) and free the slot, so the next start
        # can bind; the thread is abandoned (a daemon thread with nothing left to serve)
        self._log(f"metalxdp: ExaBGP's reactor did not stop within {timeout:.0f}s; it was at:\n"
                  + "".join(traceback.format_stack(sys._current_frames().get(self._thread.ident))))
        self._close_sockets()
        self._release()
        return False

    def _release(self) -> None:
        global _active
        with _lock:
            if _active is self:
                _active = None

    # ---- the thread ---------------------------------------------------------------------
    def _log(self, message: str) -> None:
        try:
            with open(self.log_path, "a") as f:
                f.write(f"{message}\n")
        except OSError:
            pass

    def _main(self) -> None:
        code = EXIT_CRASHED
        try:
            code = self._run()
        except BaseException:  # noqa: BLE001 - whatever ExaBGP raises is an exit, as in a process
            self._log(f"metalxdp: ExaBGP's reactor raised:\n{traceback.format_exc()}")
            self._close_sockets()
        finally:
            self.returncode = int(code) if code is not None else 0
            self._log(f"--- ExaBGP's reactor returned {self.returncode} at {time.strftime('%H:%M:%S')}")
            self._done.set()

    def _run(self) -> int:
        # settings first: ExaBGP's modules read them when imported and when set up
        os.environ.update(self._env)
        os.environ["exabgp_log_destination"] = str(self.log_path)
        from exabgp.environment import Env, getenv
        getenv()
        Env._setup = False
        Env.setup(Env.definition)
        _patch_once()
        from exabgp.configuration.configuration import Configuration
        from exabgp.logger import log
        from exabgp.reactor.loop import Reactor

        exabgp_timers.TIMERS_PATH = str(self._timers)
        exabgp_timers.note = self._log
        # this start's API token (the connection's hello), kept on this reactor's thread: the
        # environment already holds the next start's once a stopped reactor opens its API
        exabgp_timers.thread_state.token = self._env.get(exabgp_timers.API_TOKEN_ENV)
        exabgp_timers.install()
        exabgp_timers.install_api_socket(str(self._api))
        log.init(getenv())
        reactor = Reactor(Configuration([str(self.conf_path)]))
        self._reactor = reactor
        if self._stop_requested:       # stop() came before the reactor existed
            reactor.signal.stop_requested = True
            reactor.signal.received = reactor.signal.SHUTDOWN
        return reactor.run()

    def _close_sockets(self) -> None:
        """After a crash: what the end of a process would have closed (listener, sessions,
        the API connection), so a restarted reactor can bind and the peers see the session end."""
        r = self._reactor
        if r is None:
            return
        try:
            if r.listener:
                r.listener.stop()
        except Exception:  # noqa: BLE001
            pass
        for peer in list(getattr(r, "_peers", {}).values()):
            try:
                if peer.proto:
                    peer.proto.close("the reactor crashed")
            except Exception:  # noqa: BLE001
                pass
        try:
            if r.processes:
                r.processes.terminate()
        except Exception:  # noqa: BLE001
            pass
