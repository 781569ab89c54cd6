"""``metalxdp config``: offline tools for metallb.io configuration files.

- ``validate``: run the same parser as the controller/webhook over YAML files and report every
  problem, one line each;
- ``convert``: turn a legacy MetalLB ConfigMap or AddressPool resources into current resources;
- ``crds``: print the CustomResourceDefinitions (optionally without the conversion webhook).

File reading and printing live here; everything else is the pure code in metalxdp.config.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import click
import yaml

from .convert import ConvertError, convert_resources, is_legacy_configmap, to_yaml
from .yamlio import load_all
from .crds import crd_documents, render
from .parse import GROUP, validate_with_config
from .types import Config

DEFAULT_NAMESPACE = "metallb-system"
YAML_SUFFIXES = (".yaml", ".yml", ".json")


class LoadError(click.ClickException):
    exit_code = 1


def _files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in YAML_SUFFIXES)
        else:
            out.append(p)
    return out


def load_documents(paths: Iterable[str]) -> list[tuple[str, Any]]:
    """(source, document) for every YAML document in the files/directories; ``kind: List`` expanded."""
    docs: list[tuple[str, Any]] = []
    for f in _files(paths):
        try:
            loaded = list(load_all(f.read_text()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise LoadError(f"{f}: cannot read YAML: {e}") from None
        for i, doc in enumerate(loaded):
            if doc is None:
                continue
            source = f"{f}" if len(loaded) == 1 else f"{f}#{i + 1}"
            if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
                docs += [(source, item) for item in doc["items"]]
            else:
                docs.append((source, doc))
    return docs


def _cluster_inputs(docs: list[tuple[str, Any]], namespace: str) -> tuple[list, dict, dict, dict, list[str]]:
    """Split documents into metallb.io resources and the Secrets/Nodes/Namespaces they may need.

    Returns (resources, secrets, nodes, namespaces, errors). metallb.io objects without a
    namespace are put in ``namespace``; ones in another namespace are errors, because metalxdp
    (like MetalLB) only reads its own namespace and would silently ignore them.
    """
    resources, errors = [], []
    secrets: dict = {}
    nodes: Optional[dict] = None
    namespaces: Optional[dict] = None
    for source, doc in docs:
        if not isinstance(doc, dict):
            resources.append(doc)
            continue
        kind, api_version = doc.get("kind"), str(doc.get("apiVersion", ""))
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        if api_version == "v1" and kind == "Secret":
            secrets[f"{meta.get('namespace') or namespace}/{meta.get('name')}"] = doc
        elif api_version == "v1" and kind == "Node":
            nodes = nodes or {}
            nodes[meta.get("name")] = meta.get("labels") or {}
        elif api_version == "v1" and kind == "Namespace":
            namespaces = namespaces or {}
            namespaces[meta.get("name")] = meta.get("labels") or {}
        elif api_version.startswith(GROUP + "/"):
            ns = meta.get("namespace")
            if ns and ns != namespace:
                errors.append(f"{source}: {kind}/{meta.get('name')}: metadata.namespace: is {ns!r}, but metalxdp "
                              f"only reads metallb.io resources in {namespace!r}; move it or pass --namespace")
                continue
            if not ns and isinstance(doc.get("metadata"), dict):
                doc = {**doc, "metadata": {**meta, "namespace": namespace}}
            resources.append(doc)
    return resources, secrets, nodes, namespaces, errors


def summary(config: Config) -> str:
    return (f"{len(config.pools)} pools, {len(config.peers)} peers, {len(config.l2_advertisements)} L2 "
            f"advertisements, {len(config.bgp_advertisements)} BGP advertisements, {len(config.bfd_profiles)} "
            f"BFD profiles, {len(config.communities)} community aliases")


@click.group("config")
def config() -> None:
    """Check and convert metallb.io configuration offline (no cluster needed).

    \b
      metalxdp config validate -f pools.yaml -f peers/      # same checks as the webhook
      metalxdp config convert -f old-configmap.yaml -o new.yaml
      metalxdp config crds | kubectl apply -f -
    """


@config.command("validate")
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(exists=True),
              help="A YAML/JSON file (multi-document) or a directory of them; repeatable.")
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True,
              help="The namespace metalxdp runs in; metallb.io objects elsewhere are reported.")
@click.option("--strict-references/--no-strict-references", default=False, show_default=True,
              help="Also fail on references to objects not in the files (a passwordSecret's Secret, a "
                   "bfdProfile, a community alias). Off by default: they may exist in the cluster.")
def validate_cmd(paths: tuple[str, ...], namespace: str, strict_references: bool) -> None:
    """Validate metallb.io resources with the same parser as the controller and webhook.

    Reads IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer, BFDProfile, Community,
    AddressPool and MetalLB objects (a legacy MetalLB ConfigMap is converted first). v1 Secrets,
    Nodes and Namespaces in the files are used to resolve passwordSecret, node and namespace
    selectors. Prints "valid: ..." and exits 0, or prints one line per problem
    ("file: Kind/name: field: what to fix") and exits 1.
    """
    docs = load_documents(paths)
    expanded: list[tuple[str, Any]] = []
    for source, doc in docs:
        if is_legacy_configmap(doc):
            try:
                expanded += [(f"{source} (converted)", d) for d in convert_resources([doc], namespace)]
            except ConvertError as e:
                click.echo(f"{source}: {e}")
                sys.exit(1)
        else:
            expanded.append((source, doc))
    resources, secrets, nodes, namespaces, problems = _cluster_inputs(expanded, namespace)
    sources = _sources(expanded)
    cfg, errors = validate_with_config(resources, secrets=secrets, nodes=nodes, namespaces=namespaces)
    warnings = list(cfg.warnings)
    for e in errors:
        line = f"{sources.get(e.obj, '')}: {e}" if sources.get(e.obj) else str(e)
        if e.transient and not strict_references:
            warnings.append(f"{line} (not in the files; fine if it exists in the cluster)")
        else:
            problems.append(line)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if problems:
        for p in problems:
            click.echo(p)
        sys.exit(1)
    click.echo(f"valid: {summary(cfg)}")


def _sources(docs: list[tuple[str, Any]]) -> dict[str, str]:
    """"Kind/name" -> file it came from, to prefix error lines."""
    out = {}
    for source, doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
            out.setdefault(f"{doc.get('kind')}/{doc['metadata'].get('name')}", source)
    return out


@config.command("convert")
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(exists=True),
              help="A file or directory with the legacy ConfigMap and/or AddressPool objects; repeatable.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the resources here instead of stdout.")
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True,
              help="Namespace of the generated resources.")
def convert_cmd(paths: tuple[str, ...], output: Optional[str], namespace: str) -> None:
    """Convert legacy MetalLB configuration into current metallb.io resources.

    Input: the MetalLB ConfigMap (data.config with peers / address-pools / bgp-communities /
    bfd-profiles) and/or AddressPool resources; v1beta1 BGPPeers become v1beta2. Output:
    IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer, BFDProfile and Community
    resources as multi-document YAML, checked with the parser first. Apply it with
    `kubectl apply -f`, then delete the old ConfigMap/AddressPools.
    """
    docs = [doc for _, doc in load_documents(paths)]
    try:
        converted = convert_resources(docs, namespace)
    except ConvertError as e:
        click.echo(f"cannot convert: {e}", err=True)
        sys.exit(1)
    resources, secrets, nodes, namespaces, problems = _cluster_inputs([("", d) for d in converted], namespace)
    _, errors = validate_with_config(resources, secrets=secrets, nodes=nodes, namespaces=namespaces)
    problems += [str(e) for e in errors if not e.transient]
    if problems:
        click.echo("the converted configuration is not valid; fix the input:", err=True)
        for p in problems:
            click.echo(p, err=True)
        sys.exit(1)
    text = to_yaml(converted)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {len(converted)} resources to {output}", err=True)
    else:
        click.echo(text, nl=False)


@config.command("crds")
@click.option("--conversion", type=click.Choice(["webhook", "none"]), default="webhook", show_default=True,
              help="BGPPeer v1beta1<->v1beta2 conversion: through the webhook at "
                   "metallb-webhook-service.metallb-system:/convert, or none (when no webhook runs).")
def crds_cmd(conversion: str) -> None:
    """Print the metallb.io CustomResourceDefinitions (pipe into `kubectl apply -f -`)."""
    for doc in crd_documents(conversion).values():
        click.echo(render(doc), nl=False)
