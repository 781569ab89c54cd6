"""Helpers for controller integration tests: run the real controller process, create objects,
wait for Service IPs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from metalxdp.kube import ApiException, client
from metalxdp.rig.procs import Proc, start, wait_for


def start_controller(kubeconfig: str, namespace: str, log_dir: Path, name: str = "controller",
                     extra: tuple = (), lease: float = 3.0) -> Proc:
    p = start(name, [sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kubeconfig,
                     "--namespace", namespace, "--webhook-mode", "disabled", "--metrics-port", "0",
                     "--lease-duration", str(lease), "--identity", name, *extra], log_dir)
    return p


def pool(name: str, ns: str, addresses, **spec) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": ns}, "spec": {"addresses": list(addresses), **spec}}


def create_cr(api, obj: dict) -> None:
    group, version = obj["apiVersion"].split("/")
    plural = obj["kind"].lower() + ("es" if obj["kind"].endswith("s") else "s")
    client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, obj["metadata"]["namespace"],
                                                                 plural, obj)


def delete_cr(api, kind: str, ns: str, name: str, version: str = "v1beta1") -> None:
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    client.CustomObjectsApi(api).delete_namespaced_custom_object("metallb.io", version, ns, plural, name)


def lb_service(name: str, *, annotations=None, labels=None, port=80, protocol="TCP", lb_ip=None,
               families=None, policy=None, etp=None, selector=None) -> dict:
    spec = {"type": "LoadBalancer", "ports": [{"port": port, "protocol": protocol, "name": "p"}]}
    if lb_ip:
        spec["loadBalancerIP"] = lb_ip
    if families:
        spec["ipFamilies"] = families
    if policy:
        spec["ipFamilyPolicy"] = policy
    if etp:
        spec["externalTrafficPolicy"] = etp
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
            "spec": spec}


def service_ips(api, ns: str, name: str) -> list[str]:
    s = client.CoreV1Api(api).read_namespaced_service(name, ns)
    return [i.ip for i in (s.status.load_balancer.ingress or [])] if s.status.load_balancer else []


def wait_ips(api, ns: str, name: str, expect=None, timeout: float = 30, proc: Optional[Proc] = None) -> list[str]:
    """Wait until the service has IPs (or exactly ``expect``); return them."""
    got: list[str] = []

    def check():
        nonlocal got
        got = service_ips(api, ns, name)
        return bool(got) if expect is None else sorted(got) == sorted(expect)
    wait_for(f"service {ns}/{name} IPs {expect or '(any)'} (last seen {got})", check, timeout, proc=proc)
    return got


def events_for(api, ns: str, name: str) -> list[tuple[str, str]]:
    evs = client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.message) for e in evs]


def wait_event(api, ns, name, reason, timeout=30, proc=None) -> str:
    msg = ""

    def check():
        nonlocal msg
        for r, m in events_for(api, ns, name):
            if r == reason:
                msg = m
                return True
        return False
    wait_for(f"event {reason} on {ns}/{name}", check, timeout, proc=proc)
    return msg
