"""Pure rendering for the operator: one ``MetalLB`` custom resource -> the controller Deployment
and the agent (speaker) DaemonSet, the choice of the one active instance, the status conditions.

No Kubernetes client here (the I/O lives in ``controller/operator.py``), so every rule is
table-tested in ``tests/unit/test_operator_render.py``. ``render_controller({})`` and
``render_agent({})`` are, field for field, the static manifests in ``deploy/controller/`` and
``deploy/agent/`` (a unit test holds them equal), so `kubectl apply -k deploy/` and the operator
deploy the same thing.

Kubernetes-facing names stay MetalLB's (Deployment ``controller``, DaemonSet ``speaker``,
ServiceAccounts ``controller``/``speaker``, labels ``app: metallb`` + ``component``), so the
verification steps of MetalLB's docs (``kubectl get daemonset -n metallb-system speaker``), pod
affinity on ``app: metallb`` (seed 001) and RBAC/monitoring tooling written for MetalLB keep
working; the process inside is ``metalxdp controller`` / ``metalxdp agent``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from metalxdp import __version__

DEFAULT_IMAGE = f"localhost/metalxdp:{__version__}"
DEFAULT_NAMESPACE = "metallb-system"
CONTROLLER_NAME = "controller"          # Deployment and ServiceAccount (MetalLB's names)
AGENT_NAME = "speaker"                  # DaemonSet and ServiceAccount (MetalLB's names)
MEMBERLIST_SECRET = "memberlist"        # key ``secretkey``: HMAC key of the membership protocol
MEMBERLIST_KEY = "secretkey"
MANAGED_BY = "metalxdp-operator"
HASH_ANNOTATION = "metalxdp.io/rendered-hash"
# `kubectl rollout restart` stamps this on the pod template; drift correction keeps it so a
# restart the user asked for is not undone
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

CONTROLLER_METRICS_PORT = 9120
WEBHOOK_PORT = 9443
AGENT_METRICS_PORT = 7472
MEMBERLIST_PORT = 7946
BPFFS_DIR = "/sys/fs/bpf/metalxdp"

# Linux capabilities of the agent container, each with the reason it is needed (kernel >= 5.8;
# docs/install.md has the variants for older kernels). Everything else is dropped.
AGENT_CAPABILITIES = [
    "BPF",               # load the XDP program and create/pin its maps (bpf(2); kernel >= 5.8)
    "NET_ADMIN",         # attach XDP to interfaces (netlink IFLA_XDP); networking BPF programs need it besides BPF
    "NET_BIND_SERVICE",  # ExaBGP listens on TCP 179 so a router can open the session towards the node
    "NET_RAW",           # gratuitous ARP / unsolicited NA over AF_PACKET and raw ICMPv6 sockets
    "PERFMON",           # the verifier allows pointer arithmetic/comparisons the XDP parser does only with it (>= 5.8)
]

COMMON_LABELS = {"app": "metallb"}


def _labels(component: str) -> dict[str, str]:
    return {**COMMON_LABELS, "component": component}


# ---- the two workloads ----------------------------------------------------------------------
def _spec(metallb: dict) -> dict:
    return (metallb or {}).get("spec") or {}


def _args(binary_args: list[str], spec: dict) -> list[str]:
    args = list(binary_args)
    args.append(f"--log-level={spec.get('logLevel') or 'info'}")
    if spec.get("loadBalancerClass"):
        args.append(f"--lb-class={spec['loadBalancerClass']}")
    return args


def _apply_pod_config(pod: dict, container: dict, config: Optional[dict]) -> None:
    """controllerConfig / speakerConfig: priorityClassName, runtimeClassName, affinity (pod),
    annotations (pod template), resources (the main container)."""
    config = config or {}
    if config.get("priorityClassName"):
        pod["spec"]["priorityClassName"] = config["priorityClassName"]
    if config.get("runtimeClassName"):
        pod["spec"]["runtimeClassName"] = config["runtimeClassName"]
    if config.get("affinity"):
        pod["spec"]["affinity"] = copy.deepcopy(config["affinity"])
    if config.get("annotations"):
        pod["metadata"].setdefault("annotations", {}).update(
            {k: ("" if v is None else v) for k, v in config["annotations"].items()})
    if config.get("resources"):
        container["resources"] = copy.deepcopy(config["resources"])


def _node_selector(extra: Optional[dict]) -> dict[str, str]:
    sel = {"kubernetes.io/os": "linux"}
    sel.update({k: ("" if v is None else v) for k, v in (extra or {}).items()})
    return sel


def _env_field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def render_controller(metallb: Optional[dict] = None, *, namespace: str = DEFAULT_NAMESPACE,
                      image: str = DEFAULT_IMAGE) -> dict:
    """The controller Deployment for a MetalLB CR (``{}`` = all defaults)."""
    spec = _spec(metallb)
    image = spec.get("image") or image
    container = {
        "name": "controller",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": _args(["controller", "--webhook-mode=enabled", f"--metrics-port={CONTROLLER_METRICS_PORT}",
                       f"--webhook-port={WEBHOOK_PORT}"], spec),
        "env": [
            _env_field("METALLB_NAMESPACE", "metadata.namespace"),
            _env_field("POD_NAME", "metadata.name"),
            {"name": "METALLB_ML_SECRET_NAME", "value": MEMBERLIST_SECRET},
            {"name": "METALLB_DEPLOYMENT", "value": CONTROLLER_NAME},
        ],
        "ports": [
            {"name": "monitoring", "containerPort": CONTROLLER_METRICS_PORT, "protocol": "TCP"},
            {"name": "webhook-server", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
        ],
        # metalxdp.health: /healthz while the reconcile loop passes, /readyz once the informers listed
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "monitoring"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "monitoring"},
                           "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # the webhook's serving certificate is written here (read-only root filesystem)
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "metadata": {"labels": _labels("controller")},
        "spec": {
            "serviceAccountName": CONTROLLER_NAME,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                "fsGroup": 65534},
            "nodeSelector": _node_selector(spec.get("controllerNodeSelector")),
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    if spec.get("controllerTolerations"):
        pod["spec"]["tolerations"] = copy.deepcopy(spec["controllerTolerations"])
    _apply_pod_config(pod, container, spec.get("controllerConfig"))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONTROLLER_NAME, "namespace": namespace, "labels": _labels("controller")},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _labels("controller")},
            "template": pod,
        },
    }


AGENT_DEFAULT_TOLERATIONS = [
    # the agent announces addresses from every node, control-plane nodes included
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
]


def render_agent(metallb: Optional[dict] = None, *, namespace: str = DEFAULT_NAMESPACE,
                 image: str = DEFAULT_IMAGE) -> dict:
    """The agent (speaker) DaemonSet for a MetalLB CR (``{}`` = all defaults)."""
    spec = _spec(metallb)
    image = spec.get("image") or image
    container = {
        "name": "speaker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": _args(["agent", "--namespace=$(METALLB_NAMESPACE)", "--xdp-mode=auto",
                       f"--bpffs-dir={BPFFS_DIR}", f"--metrics-port={AGENT_METRICS_PORT}",
                       f"--ml-bind-port={MEMBERLIST_PORT}"], spec),
        "env": [
            _env_field("METALLB_NODE_NAME", "spec.nodeName"),
            _env_field("METALLB_HOST", "status.hostIP"),
            _env_field("METALLB_POD_NAME", "metadata.name"),
            _env_field("METALLB_NAMESPACE", "metadata.namespace"),
            _env_field("METALLB_ML_BIND_ADDR", "status.podIP"),
            {"name": "METALLB_ML_LABELS", "value": "app=metallb,component=speaker"},
            {"name": "METALLB_ML_SECRET_KEY_PATH", "value": "/etc/ml_secret_key"},
        ],
        "ports": [
            {"name": "monitoring", "containerPort": AGENT_METRICS_PORT, "protocol": "TCP"},
            {"name": "memberlist-tcp", "containerPort": MEMBERLIST_PORT, "protocol": "TCP"},
            {"name": "memberlist-udp", "containerPort": MEMBERLIST_PORT, "protocol": "UDP"},
        ],
        # metalxdp.health: /healthz while the reconcile loop passes (it does every second),
        # /readyz once the objects are listed, the membership joined and a first pass ran
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "monitoring"},
                          "initialDelaySeconds": 15, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "monitoring"},
                           "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {
            # root uid (the pins on the host's bpffs are root's) but only the
            # capabilities listed in AGENT_CAPABILITIES; not privileged
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": list(AGENT_CAPABILITIES)},
        },
        "volumeMounts": [
            # pins live on the host's bpffs, so program and maps outlive the pod: a restarted
            # agent re-adopts them and ARP/NDP keeps being answered during a rolling update.
            # HostToContainer, not Bidirectional (which needs a privileged container): the agent
            # only creates files in the already-mounted bpffs, it never mounts one
            {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
            # no /lib/modules or /usr/src from the host: BCC compiles the XDP program against
            # the kernel headers inside the image (BCC_KERNEL_SOURCE, docs/image.md)
            {"name": "memberlist", "mountPath": "/etc/ml_secret_key", "readOnly": True},
            # scratch space for BCC
            {"name": "tmp", "mountPath": "/tmp"},
            # ExaBGP's configuration and API pipes
            {"name": "run", "mountPath": "/run/metalxdp"},
        ],
    }
    pod = {
        "metadata": {"labels": _labels("speaker")},
        "spec": {
            "serviceAccountName": AGENT_NAME,
            "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            # a stopping agent leaves its pins in place; the next one takes over in < 1 s
            "terminationGracePeriodSeconds": 2,
            "nodeSelector": _node_selector(spec.get("nodeSelector")),
            "tolerations": copy.deepcopy(AGENT_DEFAULT_TOLERATIONS) + copy.deepcopy(spec.get("speakerTolerations") or []),
            "containers": [container],
            "volumes": [
                {"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}},
                {"name": "memberlist", "secret": {"secretName": MEMBERLIST_SECRET, "defaultMode": 0o400}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "run", "emptyDir": {}},
            ],
        },
    }
    _apply_pod_config(pod, container, spec.get("speakerConfig"))
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": AGENT_NAME, "namespace": namespace, "labels": _labels("speaker")},
        "spec": {
            "selector": {"matchLabels": _labels("speaker")},
            # one node at a time: the pinned XDP program keeps answering on the node whose
            # agent is being replaced, and the other nodes are untouched meanwhile
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": pod,
        },
    }


# ---- ownership and drift --------------------------------------------------------------------
def rendered_hash(obj: dict) -> str:
    """A short digest of what the operator rendered (the annotation itself excluded)."""
    o = copy.deepcopy(obj)
    o.get("metadata", {}).get("annotations", {}).pop(HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(o, sort_keys=True).encode()).hexdigest()[:16]


def owner_reference(metallb: dict) -> dict:
    m = metallb["metadata"]
    return {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "name": m["name"], "uid": m["uid"],
            "controller": True, "blockOwnerDeletion": True}


def owned(obj: dict, metallb: dict) -> dict:
    """``obj`` as the operator writes it: owned by the CR (the garbage collector removes it with
    the CR), labelled as managed, stamped with the hash of its rendered content."""
    o = copy.deepcopy(obj)
    md = o["metadata"]
    md["labels"] = {**md.get("labels", {}), "app.kubernetes.io/managed-by": MANAGED_BY}
    md["ownerReferences"] = [owner_reference(metallb)]
    md.setdefault("annotations", {})[HASH_ANNOTATION] = rendered_hash(o)
    return o


def in_sync(current: Optional[dict], desired: dict, last_written_generation: Optional[int]) -> bool:
    """Does the object on the server still carry what we rendered?

    The hash annotation says *which* rendering it has (a CR edit changes the hash); the
    generation says whether anybody changed its spec since our last write (every spec edit
    bumps ``metadata.generation``). An operator that has not written it yet (just started) has
    no generation to compare and rewrites once; an unchanged rewrite is a no-op on the server."""
    if current is None:
        return False
    md = current.get("metadata") or {}
    if (md.get("annotations") or {}).get(HASH_ANNOTATION) != desired["metadata"]["annotations"][HASH_ANNOTATION]:
        return False
    if md.get("ownerReferences") != desired["metadata"]["ownerReferences"]:
        return False
    if (md.get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGED_BY:
        return False
    return last_written_generation is not None and md.get("generation") == last_written_generation


def for_update(current: dict, desired: dict) -> dict:
    """The body that puts ``desired`` back over ``current`` (a PUT): keeps the resourceVersion,
    annotations other controllers put on the object, and a `kubectl rollout restart` stamp."""
    body = copy.deepcopy(desired)
    md = body["metadata"]
    md["resourceVersion"] = current["metadata"]["resourceVersion"]
    md["annotations"] = {**(current["metadata"].get("annotations") or {}), **md["annotations"]}
    cur_tpl = ((current.get("spec") or {}).get("template") or {}).get("metadata") or {}
    restarted = (cur_tpl.get("annotations") or {}).get(RESTARTED_AT)
    if restarted:
        body["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = restarted
    return body


# ---- one instance -------------------------------------------------------------------------
def _created_key(cr: dict) -> tuple[str, str]:
    md = cr.get("metadata") or {}
    # RFC 3339 in UTC ("2024-01-02T03:04:05Z") sorts lexically in time order
    return (md.get("creationTimestamp") or "", md.get("name") or "")


def select_active(crs: Iterable[dict]) -> tuple[Optional[dict], list[dict]]:
    """(active, ignored): only one MetalLB instance is supported; the oldest (creation time,
    then name) is it. Instances being deleted don't count."""
    live = sorted((c for c in crs if not (c.get("metadata") or {}).get("deletionTimestamp")), key=_created_key)
    return (live[0], live[1:]) if live else (None, [])


# ---- status -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    type: str
    status: str          # "True" | "False" | "Unknown"
    reason: str
    message: str


def multiple_instances(active: dict) -> list[Condition]:
    name = active["metadata"]["name"]
    msg = (f"only one MetalLB instance is supported per cluster; {name!r} (the oldest) is active "
           "and this one is ignored: delete it, or put its settings into the active one")
    return [Condition("Available", "False", "MultipleInstances", msg),
            Condition("Progressing", "False", "MultipleInstances", msg),
            Condition("Degraded", "True", "MultipleInstances", msg)]


def _deployment_state(d: Optional[dict]) -> tuple[bool, str]:
    """(available, why not) from a Deployment's status, as `kubectl rollout status` reads it."""
    if d is None:
        return False, "the controller Deployment does not exist yet"
    st, gen = d.get("status") or {}, (d.get("metadata") or {}).get("generation")
    want = (d.get("spec") or {}).get("replicas", 1)
    if st.get("observedGeneration") is None:
        return False, "the controller Deployment has not been observed by the deployment controller yet"
    if st["observedGeneration"] < (gen or 0):
        return False, "the controller Deployment's latest change is not rolled out yet"
    if st.get("updatedReplicas", 0) < want or st.get("availableReplicas", 0) < want:
        return False, (f"controller: {st.get('availableReplicas', 0)}/{want} replicas available, "
                       f"{st.get('updatedReplicas', 0)} updated")
    return True, ""


def _daemonset_state(ds: Optional[dict]) -> tuple[bool, str]:
    if ds is None:
        return False, "the speaker DaemonSet does not exist yet"
    st, gen = ds.get("status") or {}, (ds.get("metadata") or {}).get("generation")
    if st.get("observedGeneration") is None:
        return False, "the speaker DaemonSet has not been observed by the daemonset controller yet"
    if st["observedGeneration"] < (gen or 0):
        return False, "the speaker DaemonSet's latest change is not rolled out yet"
    want = st.get("desiredNumberScheduled", 0)
    if st.get("updatedNumberScheduled", 0) < want or st.get("numberAvailable", 0) < want:
        return False, (f"speaker: {st.get('numberAvailable', 0)}/{want} pods available, "
                       f"{st.get('updatedNumberScheduled', 0)} updated")
    return True, ""


def workload_conditions(deployment: Optional[dict], daemonset: Optional[dict],
                        error: Optional[str] = None) -> list[Condition]:
    """Available / Progressing / Degraded of the active instance, from the workloads' status
    fields only (no pod is looked at). Without a deployment/daemonset controller or kubelet
    (the test API server), the status fields never fill: Progressing=True, Available=False."""
    if error:
        return [Condition("Available", "False", "SyncFailed", error),
                Condition("Progressing", "False", "SyncFailed", error),
                Condition("Degraded", "True", "SyncFailed", error)]
    ok_d, why_d = _deployment_state(deployment)
    ok_s, why_s = _daemonset_state(daemonset)
    if ok_d and ok_s:
        msg = "the controller and the speaker pods are available and up to date"
        return [Condition("Available", "True", "AllComponentsAvailable", msg),
                Condition("Progressing", "False", "Deployed", msg),
                Condition("Degraded", "False", "AsExpected", "no problem detected")]
    msg = "; ".join(w for w in (why_d, why_s) if w)
    return [Condition("Available", "False", "ComponentsNotAvailable", msg),
            Condition("Progressing", "True", "Deploying", msg),
            Condition("Degraded", "False", "AsExpected", "no problem detected")]


def status_conditions(conds: list[Condition], previous: Optional[list[dict]], generation: Optional[int],
                      now: str) -> list[dict]:
    """Conditions as API objects; lastTransitionTime moves only when a status flips."""
    prev = {c.get("type"): c for c in previous or []}
    out = []
    for c in conds:
        p = prev.get(c.type)
        ltt = p["lastTransitionTime"] if p and p.get("status") == c.status and p.get("lastTransitionTime") else now
        d = {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
             "lastTransitionTime": ltt}
        if generation is not None:
            d["observedGeneration"] = generation
        out.append(d)
    return out


def same_conditions(a: Optional[list[dict]], b: list[dict]) -> bool:
    """Equal except for lastTransitionTime (so a status write happens only on a real change)."""
    strip = lambda cs: sorted(({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs or []),  # noqa: E731
                              key=lambda c: c.get("type", ""))
    return strip(a) == strip(b)


# ---- the memberlist secret ---------------------------------------------------------------------
def memberlist_secret(namespace: str, key_b64: str, name: str = MEMBERLIST_SECRET) -> dict:
    """The membership protocol's HMAC key, 128 random bytes base64-encoded (as
    `openssl rand -base64 128`). Not owned by the MetalLB CR: deleting and re-creating the CR
    must not rotate the key under running agents."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**COMMON_LABELS, "app.kubernetes.io/managed-by": MANAGED_BY}},
            "stringData": {MEMBERLIST_KEY: key_b64}}
