"""``metalxdp support-bundle``: one .tar.gz with what a bug report needs (the seeds'
must-gather for this project), secrets redacted.

What goes in (each a file under ``metalxdp-support-<time>/``):

* ``status.json`` / ``status.txt``: ``metalxdp status`` (the cluster-wide view);
* ``resources/<kind>.json``: every metallb.io object of the install namespace (Secrets are
  never read: only their names, from the BGPPeers that point at them, appear);
* ``resources/services.json``, ``events.json``, ``nodes.json``, ``pods.json``, ``leases.json``;
* ``logs/<pod>_<container>.log`` (and ``.previous.log`` after a restart) of the install
  namespace's pods, from the API;
* ``agents/<node>.json``: each agent's ``/status`` (``metalxdp agent status --json``), through
  the API server's pod proxy, or from ``--agent-endpoint NODE=URL``;
* with ``--local`` (run on a node, or in an agent pod): ``local/maps/<map>.txt`` (``bpftool map
  dump pinned`` of each pinned map), ``local/bpftool-prog.txt``, and the agent's working
  directory's ExaBGP files (``exabgp.log``, ``exabgp.conf``: the conf's ``md5-password`` lines
  redacted);
* ``--include PATH``: any further file (e.g. a lab's log directory), redacted the same way.

Redaction (``redact_obj`` / ``redact_text``, pure): any mapping key that names a password or a
secret's data (``password``, ``data``/``stringData`` of a Secret-like object, ...) is replaced by
``<redacted>``; in text, ``md5-password`` values, ``password=``/``"password":`` values and
``--password`` arguments are. The archive is built in memory and written once.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import click

REDACTED = "<redacted>"
_SECRET_KEYS = re.compile(r"(?i)^(password|passwd|secret|secretkey|token|key|md5-?password|stringdata|data)$")
_TEXT_RULES = [
    (re.compile(r"(?i)(md5-password\s+)([^\s;]+)"), r"\1" + REDACTED),
    (re.compile(r'(?i)("?(?:password|passwd|secretkey|token)"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,;}]+)'),
     r"\1" + '"' + REDACTED + '"'),
    (re.compile(r"(?i)(--(?:password|token)[ =])(\S+)"), r"\1" + REDACTED),
]


def redact_obj(obj: Any, _kind: Optional[str] = None) -> Any:
    """A copy of ``obj`` with every secret-bearing value replaced. ``data``/``key`` are secret
    only where they can be (a Secret-like object, or any mapping under a key named so); a
    ConfigMap's ``data`` (MetalLB's legacy config) is kept but redacted inside."""
    if isinstance(obj, Mapping):
        kind = obj.get("kind", _kind) if isinstance(obj.get("kind"), str) else _kind
        out = {}
        for k, v in obj.items():
            secretish = _SECRET_KEYS.match(str(k)) is not None
            if secretish and str(k).lower() in ("data", "key", "secret") and kind not in ("Secret", None) \
                    and not isinstance(v, (str, bytes)):
                secretish = False   # a ConfigMap's data, a selector's key: keep, redact inside
            if secretish and str(k).lower() == "key" and isinstance(v, str) and kind != "Secret":
                secretish = False   # label-selector keys, ...
            if secretish and v not in (None, "", {}, []):
                out[k] = REDACTED
            elif isinstance(v, str) and k != "message" and "\n" in v:
                out[k] = redact_text(v)   # embedded configs (the legacy ConfigMap's `config`)
            else:
                out[k] = redact_obj(v, kind)
        return out
    if isinstance(obj, list):
        return [redact_obj(v, _kind) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj) if "assword" in obj or "md5" in obj else obj
    return obj


def redact_text(text: str) -> str:
    for rx, repl in _TEXT_RULES:
        text = rx.sub(repl, text)
    return text


class Bundle:
    """Files collected in memory: ``add(name, text)``; ``problems`` records what could not be
    collected (written as ``problems.txt``: a bundle is still useful when parts fail)."""

    def __init__(self, root: str):
        self.root, self.files, self.problems = root, {}, []

    def add(self, name: str, content: Any) -> None:
        if not isinstance(content, str):
            content = json.dumps(redact_obj(content), indent=2, default=str) + "\n"
        else:
            content = redact_text(content)
        self.files[f"{self.root}/{name}"] = content.encode()

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - collect what can be collected; say what could not
            self.problems.append(f"{what}: {e}")

    def write(self, path: Path) -> None:
        if self.problems:
            self.files[f"{self.root}/problems.txt"] = ("\n".join(self.problems) + "\n").encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in sorted(self.files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(data))
        path.write_bytes(buf.getvalue())
        os.chmod(path, 0o600)


def _parse_endpoints(values: Iterable[str]) -> dict[str, str]:
    out = {}
    for v in values:
        node, sep, url = v.partition("=")
        if not sep or not node or not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{v!r}: want NODE=http://ADDRESS:PORT", param_hint="--agent-endpoint")
        out[node] = url.rstrip("/")
    return out


def _collect_cluster(b: Bundle, api, namespace: str, agent_port: int, endpoints: dict[str, str]) -> None:
    from .kube import client
    from .status import build, format_status
    from .status_cli import GROUP, VERSION, read_cluster

    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    san = api.sanitize_for_serialization

    def status():
        objs = read_cluster(api, namespace)
        doc = build(**objs)
        b.add("status.json", doc)
        b.add("status.txt", format_status(doc))
        b.add("resources/services.json", objs["services"])
        b.add("resources/events-services.json", objs["events"])
    b.attempt("metalxdp status", status)

    def custom():
        from .config.crds import crd_documents
        for crd in crd_documents().values():
            plural = crd["spec"]["names"]["plural"]
            try:
                items = co.list_namespaced_custom_object(GROUP, _served_version(crd), namespace,
                                                         plural).get("items") or []
            except Exception as e:  # noqa: BLE001
                b.problems.append(f"list {plural}: {e}")
                continue
            b.add(f"resources/{plural}.json", items)
    b.attempt("metallb.io resources", custom)
    b.attempt("events", lambda: b.add("resources/events.json", san(core.list_namespaced_event(namespace)).get("items")))
    b.attempt("nodes", lambda: b.add("resources/nodes.json", san(core.list_node()).get("items")))
    b.attempt("leases", lambda: b.add("resources/leases.json", san(
        client.CoordinationV1Api(api).list_namespaced_lease(namespace)).get("items")))

    pods: list = []

    def list_pods():
        pods.extend(san(core.list_namespaced_pod(namespace)).get("items") or [])
        b.add("resources/pods.json", pods)
    b.attempt("pods", list_pods)
    for pod in pods:
        name = pod["metadata"]["name"]
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            c = cs["name"]
            b.attempt(f"log of {name}/{c}", lambda n=name, c=c: b.add(
                f"logs/{n}_{c}.log", core.read_namespaced_pod_log(n, namespace, container=c, _request_timeout=30)))
            if cs.get("restartCount"):
                b.attempt(f"previous log of {name}/{c}", lambda n=name, c=c: b.add(
                    f"logs/{n}_{c}.previous.log",
                    core.read_namespaced_pod_log(n, namespace, container=c, previous=True, _request_timeout=30)))
        labels = (pod.get("metadata") or {}).get("labels") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if labels.get("component") == "speaker" and node and node not in endpoints:
            path = f"/api/v1/namespaces/{namespace}/pods/{name}:{agent_port}/proxy/status"
            b.attempt(f"agent status of {node} (pod proxy)", lambda node=node, path=path: b.add(
                f"agents/{node}.json", _get_via_api(api, path)))
    for node, url in sorted(endpoints.items()):
        b.attempt(f"agent status of {node} ({url})", lambda node=node, url=url: b.add(
            f"agents/{node}.json", _get_url(url + "/status")))


def _served_version(crd: Mapping) -> str:
    """The storage version of a CRD (what a list returns without conversion)."""
    return next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))


def _get_via_api(api, path: str) -> dict:
    from .kube import call_json
    return call_json(api, "GET", path, timeout=15)


def _get_url(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _collect_local(b: Bundle, bpffs_dir: Path, workdir: Path) -> None:
    def maps():
        if not bpffs_dir.is_dir():
            raise FileNotFoundError(f"{bpffs_dir}: no pinned maps here (is this the agent's node or pod?)")
        for pin in sorted(bpffs_dir.iterdir()):
            r = subprocess.run(["bpftool", "map", "dump", "pinned", str(pin)], capture_output=True, text=True,
                               timeout=30)
            if r.returncode == 0:
                b.add(f"local/maps/{pin.name}.txt", r.stdout)
    b.attempt("pinned maps", maps)
    b.attempt("bpftool prog", lambda: b.add("local/bpftool-prog.txt", subprocess.run(
        ["bpftool", "prog", "show"], capture_output=True, text=True, timeout=30, check=True).stdout))

    def exabgp():
        found = False
        for f in sorted(workdir.rglob("exabgp*")) if workdir.is_dir() else []:
            if f.is_file() and f.suffix in (".log", ".conf", ".env"):
                b.add(f"local/exabgp/{f.relative_to(workdir)}", f.read_text(errors="replace")[-4_000_000:])
                found = True
        if not found:
            raise FileNotFoundError(f"no ExaBGP files under {workdir}")
    b.attempt("ExaBGP files", exabgp)


def _collect_includes(b: Bundle, paths: Iterable[str]) -> None:
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            rel = f.relative_to(p.parent) if p.is_dir() else Path(f.name)
            b.attempt(f"include {f}", lambda f=f, rel=rel: b.add(f"included/{rel}", f.read_text(errors="replace")))


@click.command("support-bundle")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig (default: $KUBECONFIG, else in-cluster).")
@click.option("--namespace", "-n", default=lambda: os.environ.get("METALLB_NAMESPACE", "metallb-system"),
              show_default="metallb-system", help="Where metalxdp is installed.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Archive to write (default: ./metalxdp-support-<UTC time>.tar.gz).")
@click.option("--agent-port", default=7472, show_default=True, help="The agents' --metrics-port (for /status).")
@click.option("--agent-endpoint", multiple=True, metavar="NODE=URL",
              help="Read NODE's agent status from URL instead of through the API server's pod proxy "
                   "(repeatable), e.g. node1=http://192.0.2.11:7472.")
@click.option("--local", "local_", is_flag=True,
              help="Also what only this node has: pinned map dumps (bpftool), loaded programs, ExaBGP's log "
                   "and config. Run it on a node or in an agent pod.")
@click.option("--bpffs-dir", default="/sys/fs/bpf/metalxdp", show_default=True, type=click.Path(),
              help="With --local: the agent's --bpffs-dir.")
@click.option("--workdir", default="/run/metalxdp/agent", show_default=True, type=click.Path(),
              help="With --local: the agent's --workdir (ExaBGP's files).")
@click.option("--include", multiple=True, type=click.Path(exists=True),
              help="A further file or directory to add (redacted like the rest); repeatable.")
@click.option("--no-cluster", is_flag=True, help="Skip the API (only --local and --include).")
def support_bundle(kubeconfig, namespace, output, agent_port, agent_endpoint, local_, bpffs_dir, workdir, include,
                   no_cluster):
    """Collect one archive for a bug report: `metalxdp status`, every metallb.io object,
    Services, Events, Nodes, the controller's and agents' logs (also the previous container's
    after a restart), every agent's `agent status` and, with --local, the pinned map dumps and
    ExaBGP's log. Passwords and Secret data are redacted (Secrets themselves are never read);
    what could not be collected is listed in problems.txt inside the archive.

    Attach the archive to the issue; check it first if you like: `tar tzf FILE`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = f"metalxdp-support-{stamp}"
    out = Path(output or f"{root}.tar.gz")
    b = Bundle(root)
    endpoints = _parse_endpoints(agent_endpoint)
    if not no_cluster:
        from .kube import api_client
        try:
            api = api_client(kubeconfig)
        except Exception as e:  # noqa: BLE001
            raise click.ClickException(f"cannot reach the cluster ({e}); use --no-cluster for local parts only")
        _collect_cluster(b, api, namespace, agent_port, endpoints)
    if local_:
        _collect_local(b, Path(bpffs_dir), Path(workdir))
    _collect_includes(b, include)
    b.write(out)
    click.echo(f"wrote {out} ({len(b.files)} files"
               + (f"; {len(b.problems)} part(s) could not be collected, see problems.txt" if b.problems else "")
               + ")")
