"""Is this agent stopping because metalxdp is being uninstalled?

On SIGTERM the agent normally keeps its XDP program attached and its maps pinned, so the next
agent (a rollout, a restart) adopts them without a gap. When the DaemonSet itself is going away
(``kubectl delete -k deploy/``, the operator's instance deleted) nothing will adopt them: the
program would keep answering ARP for VIPs nobody manages and the pins would stay on every node's
bpffs. So at SIGTERM the agent asks the API about its own pod's DaemonSet, and cleans up (detach,
unpin) when it is gone or going.

Otherwise the agent tells its peers how it leaves (``stop_mode``): a pod deleted through the
API (a DaemonSet rollout, ``kubectl delete pod``, an eviction) on a node that stays is replaced
on the same node, so it leaves as *restarting* and its VIPs stay where they are
(agent.membership); anything else (a node shutting down, a container killed in place) leaves
as before and the VIPs move at once.

``decide`` and ``stop_mode`` are the pure rules over the answers; ``check`` does the GETs.
"""
from __future__ import annotations

from typing import Optional

# An answer: (HTTP status, object or None). 0 = no answer (timeout, connection refused).
Answer = tuple[int, Optional[dict]]


def daemonset_owner(pod: dict) -> Optional[str]:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "DaemonSet" and ref.get("controller", True):
            return ref.get("name")
    return None


def decide(pod: Answer, daemonset: Optional[Answer], namespace: Optional[Answer] = None) -> tuple[bool, str]:
    """(uninstalling, reason). ``daemonset`` is None when the pod's answer named no DaemonSet.

    Uninstall: the namespace or the DaemonSet is being deleted (``kubectl delete -k`` deletes the
    namespace too, whose controller may end the pods before the DaemonSet), the DaemonSet is
    gone (404); or the API
    refuses the agent (401/403: its ServiceAccount or Role is deleted with the rest of the
    install, often before the pods). Anything else, above all no answer at all, keeps the
    program: a wrong "keep" leaves pins an operator can remove, a wrong "clean up" would make
    a plain restart drop ARP answers until the next agent has rebuilt them."""
    if namespace is not None and namespace[0] == 200 and namespace[1] is not None and (
            (namespace[1].get("metadata") or {}).get("deletionTimestamp")
            or (namespace[1].get("status") or {}).get("phase") == "Terminating"):
        return True, "the namespace is being deleted"
    code, obj = pod
    if code in (401, 403):
        return True, f"the API refuses this agent ({code}): its ServiceAccount or RBAC is being removed"
    if code != 200 or obj is None:
        return False, f"own pod not readable ({code or 'no answer'})"
    if daemonset is None:
        return False, "the pod has no DaemonSet owner (not run by the DaemonSet)"
    code, ds = daemonset
    if code == 404:
        return True, "the DaemonSet is deleted"
    if code in (401, 403):
        return True, f"the API refuses this agent ({code}): its ServiceAccount or RBAC is being removed"
    if code == 200 and ds is not None and (ds.get("metadata") or {}).get("deletionTimestamp"):
        return True, "the DaemonSet is being deleted"
    return False, "the DaemonSet stays" if code == 200 else f"the DaemonSet not readable ({code or 'no answer'})"


UNINSTALL, RESTART, LEAVE = "uninstall", "restart", "leave"


def stop_mode(pod: Answer, daemonset: Optional[Answer], namespace: Optional[Answer] = None,
              node: Optional[Answer] = None) -> tuple[str, str]:
    """(UNINSTALL | RESTART | LEAVE, reason). RESTART only when the answers show a replacement
    coming on this node: the pod has a deletionTimestamp (deleted through the API, so its
    DaemonSet, which stays, creates the next one) and the node is readable and not being
    deleted. No answer, or a pod not being deleted (a node shutting down kills its pods
    without deleting them), is LEAVE: a wrong RESTART keeps a stopped node's VIPs for the
    restart hold, a wrong LEAVE only moves them (as MetalLB always does)."""
    gone, why = decide(pod, daemonset, namespace)
    if gone:
        return UNINSTALL, why
    code, obj = pod
    if code != 200 or obj is None or daemonset is None or daemonset[0] != 200:
        return LEAVE, why
    if not (obj.get("metadata") or {}).get("deletionTimestamp"):
        return LEAVE, "the pod is not being deleted (its container or node stops): no replacement known"
    if node is None or node[0] != 200 or node[1] is None:
        return LEAVE, f"own node not readable ({node[0] if node and node[0] else 'no answer'})"
    if (node[1].get("metadata") or {}).get("deletionTimestamp"):
        return LEAVE, "the node is being deleted"
    return RESTART, "the pod is being replaced by its DaemonSet on a node that stays"


def check(api, namespace: str, pod_name: str, timeout: float = 3.0,
          node_name: str = "") -> tuple[str, str]:
    """``stop_mode`` over the API's answers for ``pod_name``, its DaemonSet, the namespace and
    ``node_name`` (``api``: an ApiClient)."""
    if not pod_name:
        return LEAVE, "no --pod-name: cannot tell a restart from an uninstall"

    from metalxdp.kube import call_json

    def get(path: str) -> Answer:
        try:
            return 200, call_json(api, "GET", path, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - ApiException carries .status; others: no answer
            return getattr(e, "status", 0) or 0, None

    pod = get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
    owner = daemonset_owner(pod[1]) if pod[1] else None
    ds = get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{owner}") if owner else None
    ns = get(f"/api/v1/namespaces/{namespace}")
    deleting = bool(pod[1] and (pod[1].get("metadata") or {}).get("deletionTimestamp"))
    node = get(f"/api/v1/nodes/{node_name}") if node_name and deleting and not decide(pod, ds, ns)[0] else None
    return stop_mode(pod, ds, ns, node)
