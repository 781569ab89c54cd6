"""The one boundary to the Kubernetes API: every other module reaches Kubernetes through here.

Keeps the ``kubernetes`` client import in one place, builds clients from a kubeconfig or the
in-cluster service account, and offers the few generic operations the lab, controller, agent
and operator share (apply a manifest, typed errors).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

import urllib3
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

__all__ = ["client", "ApiException", "api_client", "dynamic_client", "apply", "load_yaml", "service_event",
           "NotFound", "Conflict", "is_status"]


def is_status(e: BaseException, code: int) -> bool:
    return isinstance(e, ApiException) and e.status == code


def NotFound(e: BaseException) -> bool:  # noqa: N802 - reads as a predicate at call sites
    return is_status(e, 404)


def Conflict(e: BaseException) -> bool:  # noqa: N802
    return is_status(e, 409)


def service_event(svc: dict, type_: str, reason: str, message: str, component: str,
                  host: Optional[str] = None) -> dict:
    """A core/v1 Event about Service ``svc`` (as MetalLB's controller and speaker emit them)."""
    import time
    m = svc.get("metadata") or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = {"component": component, **({"host": host} if host else {})}
    return {"metadata": {"generateName": f"{m.get('name', 'svc')}.", "namespace": m.get("namespace")},
            "involvedObject": {"kind": "Service", "apiVersion": "v1", "name": m.get("name"),
                               "namespace": m.get("namespace"), "uid": m.get("uid"),
                               "resourceVersion": m.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": source}


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


def load_yaml(paths: Iterable[Path]) -> list[dict]:
    """All documents of the YAML files (directories: their *.yaml files, sorted)."""
    docs: list[dict] = []
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            docs += [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
    return docs


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
