"""The agents' membership key (Secret ``memberlist``, key ``secretkey``), created when missing.

MetalLB's controller does this at start-up when given ``--ml-secret-name``; metalxdp's controller
does the same (the flag, or METALLB_ML_SECRET_NAME as in MetalLB's manifests) and so does the
operator. An existing Secret is never replaced: running agents keep their key.
"""
from __future__ import annotations

import base64
import secrets

from metalxdp.kube import client, get_or_create
from metalxdp.log import get_logger

from . import operator_render as render

log = get_logger("controller")


def ensure_memberlist_secret(api: client.ApiClient, namespace: str, name: str = render.MEMBERLIST_SECRET) -> bool:
    """Create the Secret with a fresh 128-byte random key unless it exists; True if created."""
    core = client.CoreV1Api(api)

    def create():
        key = base64.b64encode(secrets.token_bytes(128)).decode()
        return core.create_namespaced_secret(namespace, render.memberlist_secret(namespace, key, name=name))

    # created meanwhile by someone else (a lost race): theirs is as good
    _, created = get_or_create(lambda: core.read_namespaced_secret(name, namespace), create)
    if created:
        log.info("created the memberlist key", event="memberlistSecretCreated", secret=f"{namespace}/{name}")
    return created
