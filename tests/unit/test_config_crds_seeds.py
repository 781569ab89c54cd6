"""The CRDs in deploy/crds and the seed examples: structure (no CEL, structural schemas), and that every
seed example (OpenShift/MetalLB docs) fits the schema and parses."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from metalxdp.config.crds import crd_documents, object_problems, render
from metalxdp.config.parse import validate
from metalxdp.config.yamlio import load_all

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "crds"
SEEDS = sorted((REPO / "tests" / "data" / "seeds").glob("*.yaml"))
sys.path.insert(0, str(REPO / "tests" / "data" / "config"))
from cases import CASES  # noqa: E402

STATUS_SUBRESOURCE = {"IPAddressPool", "L2Advertisement", "BGPAdvertisement", "BGPPeer", "BFDProfile",
                      "Community", "ServiceL2Status", "ServiceBGPStatus", "ConfigurationState", "MetalLB",
                      "AddressPool"}


def crd_files() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))}


def test_crd_files_are_the_generator_output():
    """Edit metalxdp/config/crds.py and run `python -m metalxdp.config.crds deploy/crds`."""
    generated = crd_documents()
    assert sorted(generated) == sorted(crd_files())
    for name, doc in generated.items():
        assert (CRD_DIR / name).read_text() == render(doc), name


def _walk_schemas(schema: dict, path: str):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk_schemas(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk_schemas(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk_schemas(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(crd_documents()))
def test_crd_is_structural_and_1_20_compatible(name):
    doc = crd_files()[name]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["spec"]["group"] == "metallb.io" and doc["spec"]["scope"] == "Namespaced"
    assert "x-kubernetes-validations" not in (CRD_DIR / name).read_text(), "CEL needs Kubernetes 1.25+"
    storage = [v for v in doc["spec"]["versions"] if v["storage"]]
    assert len(storage) == 1
    for v in doc["spec"]["versions"]:
        for path, schema in _walk_schemas(v["schema"]["openAPIV3Schema"], v["name"]):
            assert "type" in schema, f"{name} {path}: structural schemas need a type everywhere"
            if schema.get("default") is not None:
                assert isinstance(schema["default"], {"integer": int, "boolean": bool, "string": str}[schema["type"]])
        if doc["spec"]["names"]["kind"] in STATUS_SUBRESOURCE:
            assert v.get("subresources") == {"status": {}}, f"{name} {v['name']} needs the status subresource"


def test_bgppeer_versions_and_conversion():
    doc = crd_files()["metallb.io_bgppeers.yaml"]
    versions = {v["name"]: v for v in doc["spec"]["versions"]}
    assert versions["v1beta1"]["served"] and not versions["v1beta1"]["storage"]
    assert versions["v1beta2"]["served"] and versions["v1beta2"]["storage"]
    conv = doc["spec"]["conversion"]
    assert conv["strategy"] == "Webhook"
    assert conv["webhook"]["clientConfig"]["service"] == {
        "name": "metallb-webhook-service", "namespace": "metallb-system", "path": "/convert"}
    assert conv["webhook"]["conversionReviewVersions"] == ["v1"]
    assert crd_documents("none")["metallb.io_bgppeers.yaml"]["spec"]["conversion"] == {"strategy": "None"}


def test_legacy_addresspool_served_in_both_versions():
    doc = crd_files()["metallb.io_addresspools.yaml"]
    versions = {v["name"]: v for v in doc["spec"]["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"} and all(v["served"] for v in versions.values())
    spec = versions["v1beta1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["protocol"]["enum"] == ["layer2", "bgp"]
    assert set(spec["bgpAdvertisements"]["items"]["properties"]) == {
        "aggregationLength", "aggregationLengthV6", "localPref", "communities"}
    assert spec["autoAssign"]["default"] is True and spec["avoidBuggyIPs"]["default"] is False


def test_reference_defaults_and_ranges():
    s = {k: d for k, d in ((doc["spec"]["names"]["kind"], doc["spec"]["versions"][-1]["schema"]["openAPIV3Schema"]
                            ["properties"].get("spec", {}).get("properties", {})) for doc in crd_documents().values())}
    assert s["BGPPeer"]["peerPort"] == {**s["BGPPeer"]["peerPort"], "minimum": 1, "maximum": 16384, "default": 179}
    assert s["BGPPeer"]["myASN"]["maximum"] == 4294967295
    assert s["BGPAdvertisement"]["aggregationLength"]["default"] == 32
    assert s["BGPAdvertisement"]["aggregationLengthV6"]["default"] == 128
    assert (s["BFDProfile"]["detectMultiplier"]["minimum"], s["BFDProfile"]["detectMultiplier"]["maximum"]) == (2, 255)
    assert (s["BFDProfile"]["minimumTtl"]["minimum"], s["BFDProfile"]["minimumTtl"]["maximum"]) == (1, 254)
    for key in ("receiveInterval", "transmitInterval", "echoInterval"):
        assert (s["BFDProfile"][key]["minimum"], s["BFDProfile"][key]["maximum"]) == (10, 60000)
    assert s["IPAddressPool"]["autoAssign"]["default"] is True


def test_seed_examples_extracted():
    """seed 000: one AddressPool; seed 001: four MetalLB resources (other seed YAML is not metallb.io)."""
    names = [p.name for p in SEEDS]
    assert sum(n.startswith("000-") for n in names) == 1
    assert sum(n.startswith("001-") for n in names) == 4


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_example_fits_the_crd_schema(path):
    for doc in load_all(path.read_text()):
        assert object_problems(doc) == [], path.name


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_example_parses(path):
    docs = list(load_all(path.read_text()))
    assert docs and all(str(d["apiVersion"]).startswith("metallb.io/") for d in docs)
    assert validate(docs) == []


def test_seed_000_community_stays_a_string():
    doc = next(load_all((REPO / "tests/data/seeds/000-addresspool-no-advertise.yaml").read_text()))
    assert doc["spec"]["bgpAdvertisements"][0]["communities"] == ["65535:65282"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_schema_level_matches_the_crds(case):
    """Schema-level cases are rejected by the CRDs; all others pass the schema (the webhook decides)."""
    problems = [p for r in case.resources for p in object_problems(r)]
    if case.level == "schema":
        assert problems, "expected a schema rejection"
    else:
        assert problems == []


def test_no_schema_the_api_server_would_rewrite():
    """An empty `properties: {}` is dropped by the API server, so every `kubectl apply` sent it
    again and reported the CRD "configured" (found by the e2e re-apply test)."""
    for name, doc in crd_files().items():
        for v in doc["spec"]["versions"]:
            for path, schema in _walk_schemas(v["schema"]["openAPIV3Schema"], v["name"]):
                assert schema.get("properties", None) != {}, f"{name}: {path} has properties: {{}}"
