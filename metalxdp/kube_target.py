"""Where an API server is and how to authenticate to it, from a kubeconfig document or a pod's
service account: pure logic (no I/O), shared by metalxdp.kube's RestClient.

Supported, as kubectl reads them: ``server`` (https or http), ``certificate-authority`` and
``-data``, ``insecure-skip-tls-verify``, ``tls-server-name``, ``client-certificate`` /
``client-key`` and their ``-data``, ``token`` and ``tokenFile``; relative paths are relative to
the kubeconfig's directory. ``exec`` and ``auth-provider`` plugins are refused with an error that
says so (the agent's client runs no plugins; in a pod it uses its service account).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping, Optional

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeconfigError(ValueError):
    """A kubeconfig (or a pod's environment) that does not say how to reach an API server."""


@dataclass(frozen=True)
class Target:
    """An API server and the credentials for it. ``*_data``: PEM bytes; ``*_file``: paths."""
    scheme: str
    host: str
    port: int
    ca_data: Optional[bytes] = None
    ca_file: Optional[str] = None
    insecure: bool = False
    tls_server_name: Optional[str] = None
    cert_data: Optional[bytes] = None
    cert_file: Optional[str] = None
    key_data: Optional[bytes] = None
    key_file: Optional[str] = None
    token: Optional[str] = None
    token_file: Optional[str] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_server(server: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a kubeconfig ``server`` URL; a path part is refused."""
    s = (server or "").strip()
    scheme, sep, rest = s.partition("://")
    if not sep or scheme not in ("https", "http"):
        raise KubeconfigError(f"server {server!r}: want https://host[:port] (or http://)")
    hostport, _, path = rest.partition("/")
    if path.strip("/"):
        raise KubeconfigError(f"server {server!r}: a path after the host is not supported")
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_s = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise KubeconfigError(f"server {server!r}: bad IPv6 literal")
    else:
        host, _, port_s = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host:
        raise KubeconfigError(f"server {server!r}: no host")
    try:
        port = int(port_s) if port_s else (443 if scheme == "https" else 80)
    except ValueError:
        raise KubeconfigError(f"server {server!r}: bad port {port_s!r}") from None
    if not 0 < port < 65536:
        raise KubeconfigError(f"server {server!r}: port {port} out of range")
    return scheme, host, port


def _named(doc: Mapping, section: str, name: str, key: str) -> Mapping:
    for entry in doc.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(key)
            if not isinstance(value, Mapping):
                raise KubeconfigError(f"{section} entry {name!r} has no {key!r} mapping")
            return value
    raise KubeconfigError(f"no {section} entry named {name!r}")


def _data(value, field: str) -> Optional[bytes]:
    if value in (None, ""):
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{field}: not base64") from None


def _path(value, base_dir: str) -> Optional[str]:
    if value in (None, ""):
        return None
    p = PurePosixPath(str(value))
    return str(p if p.is_absolute() else PurePosixPath(base_dir) / p)


def from_kubeconfig(doc, base_dir: str = ".", context: Optional[str] = None) -> Target:
    """The Target of ``context`` (default: current-context) of kubeconfig document ``doc``."""
    if not isinstance(doc, Mapping):
        raise KubeconfigError("not a kubeconfig: the document is not a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise KubeconfigError("no context given and no current-context set")
    ctx = _named(doc, "contexts", name, "context")
    cluster = _named(doc, "clusters", ctx.get("cluster") or "", "cluster")
    user = _named(doc, "users", ctx["user"], "user") if ctx.get("user") else {}
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeconfigError(f"user {ctx.get('user')!r} authenticates with {plugin!r}, which this client does "
                                  "not run: use a token, a token file or a client certificate (in a pod: its "
                                  "service account, with no --kubeconfig)")
    if user.get("username") or user.get("password"):
        raise KubeconfigError(f"user {ctx.get('user')!r}: basic auth is not supported (Kubernetes removed it)")
    scheme, host, port = parse_server(cluster.get("server", ""))
    t = Target(scheme=scheme, host=host, port=port,
               ca_data=_data(cluster.get("certificate-authority-data"), "certificate-authority-data"),
               ca_file=_path(cluster.get("certificate-authority"), base_dir),
               insecure=bool(cluster.get("insecure-skip-tls-verify")),
               tls_server_name=cluster.get("tls-server-name") or None,
               cert_data=_data(user.get("client-certificate-data"), "client-certificate-data"),
               cert_file=_path(user.get("client-certificate"), base_dir),
               key_data=_data(user.get("client-key-data"), "client-key-data"),
               key_file=_path(user.get("client-key"), base_dir),
               token=user.get("token") or None, token_file=_path(user.get("tokenFile"), base_dir))
    has_cert, has_key = bool(t.cert_data or t.cert_file), bool(t.key_data or t.key_file)
    if has_cert != has_key:
        raise KubeconfigError(f"user {ctx.get('user')!r}: a client certificate needs its key, and a key its certificate")
    if t.insecure and (t.ca_data or t.ca_file):
        raise KubeconfigError(f"cluster {ctx.get('cluster')!r}: insecure-skip-tls-verify and a certificate "
                              "authority exclude each other (kubectl refuses this too)")
    return t


def in_cluster(env: Mapping[str, str], sa_dir: str = SERVICE_ACCOUNT_DIR) -> Target:
    """The API server as a pod sees it: $KUBERNETES_SERVICE_HOST/PORT, the service account's
    token file (re-read as the kubelet rotates it) and CA."""
    host, port_s = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port_s:
        raise KubeconfigError("not in a pod (KUBERNETES_SERVICE_HOST/PORT unset) and no kubeconfig: "
                              "pass --kubeconfig or set $KUBECONFIG")
    try:
        port = int(port_s)
    except ValueError:
        raise KubeconfigError(f"KUBERNETES_SERVICE_PORT={port_s!r} is not a port") from None
    return Target(scheme="https", host=host, port=port, ca_file=f"{sa_dir}/ca.crt", token_file=f"{sa_dir}/token")
