"""``metalxdp status`` (also ``kubectl metalxdp status``): reads what ``metalxdp.status.build``
needs from the API and prints it. Read-only; RBAC needed: list Services and Events in all
namespaces (or ``--service-namespace``), and the metallb.io objects, Lease in the install
namespace."""
from __future__ import annotations

import json
import os
from typing import Optional

import click

from .kube import ApiException, api_client, client
from .status import build, format_status

LEASE = "metalxdp-controller"
GROUP, VERSION = "metallb.io", "v1beta1"


def _items(call) -> list:
    try:
        return call().get("items") or []
    except ApiException as e:
        if e.status == 404:   # the CRD is not installed (e.g. only MetalLB's older CRDs)
            return []
        raise


def read_cluster(api: client.ApiClient, namespace: str, service_namespace: Optional[str] = None) -> dict:
    """The objects ``build`` reads, as plain dicts (keyword arguments for it)."""
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    san = api.sanitize_for_serialization
    if service_namespace:
        svcs = core.list_namespaced_service(service_namespace)
        evs = core.list_namespaced_event(service_namespace, field_selector="involvedObject.kind=Service")
    else:
        svcs = core.list_service_for_all_namespaces()
        evs = core.list_event_for_all_namespaces(field_selector="involvedObject.kind=Service")
    custom = lambda plural: _items(lambda: co.list_namespaced_custom_object(GROUP, VERSION, namespace, plural))  # noqa: E731
    try:
        state = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "configurationstates", "controller")
    except ApiException as e:
        if e.status != 404:
            raise
        state = None
    try:
        leader = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace).spec.holder_identity
    except ApiException as e:
        if e.status != 404:
            raise
        leader = None
    return {"services": san(svcs).get("items") or [], "events": san(evs).get("items") or [],
            "l2_statuses": custom("servicel2statuses"), "bgp_statuses": custom("servicebgpstatuses"),
            "pools": custom("ipaddresspools"), "config_state": state, "leader": leader}


@click.command("status")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig (default: $KUBECONFIG, else in-cluster).")
@click.option("--namespace", "-n", default=lambda: os.environ.get("METALLB_NAMESPACE", "metallb-system"),
              show_default="metallb-system", help="Where metalxdp (or MetalLB) is installed: pools, status objects, lease.")
@click.option("--service-namespace", default=None, help="Only Services (and their Events) of this namespace.")
@click.option("--lb-class", default=None, help="The controller's --lb-class, if it runs with one.")
@click.option("--json", "as_json", is_flag=True, help="Print the document as JSON (stable keys, for scripts).")
def status(kubeconfig, namespace, service_namespace, lb_class, as_json):
    """Show every LoadBalancer Service with its IPs, pool and announcing node(s) per protocol
    (layer2: node and interfaces; bgp: nodes and peers), and for a Service announced nowhere
    the reason each agent gave (MetalLB's names: notOwner, noMatchingAdvertisement,
    noLocalEndpoints, ...); then the pools with their usage, the configuration state and the
    controller's leader.

    It reads only the API (Services, Events, ServiceL2Status, ServiceBGPStatus, IPAddressPool,
    ConfigurationState, the Lease). For one node's BGP sessions, BFD peers and XDP counters run
    `metalxdp agent status` on that node (or in its agent pod)."""
    try:
        api = api_client(kubeconfig)
        doc = build(**read_cluster(api, namespace, service_namespace), lb_class=lb_class)
    except ApiException as e:
        raise click.ClickException(f"the API server said {e.status} {e.reason}: {str(e.body)[:300]}")
    except Exception as e:  # noqa: BLE001 - no kubeconfig, unreachable server: say which
        raise click.ClickException(f"cannot read the cluster: {e}")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_status(doc), nl=False)
