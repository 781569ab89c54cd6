"""The parts of metalxdp.kube that need the ``kubernetes`` client package (typed APIs, the dynamic
client, kubeconfig loading as the client does it). Loaded on first use of ``metalxdp.kube.client``,
``ApiException``, ``api_client``, ``dynamic_client`` or ``apply``: the controller, the webhook,
the operator, the CLI and the lab use them; the agent never does (see metalxdp.kube)."""
from __future__ import annotations

import os
from typing import Any, Optional

import urllib3
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

__all__ = ["client", "ApiException", "api_client", "dynamic_client", "apply"]


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
