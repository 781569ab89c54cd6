"""The Vagrant lab's generated files (vagrant/generated/) against their single source.

Drift: the committed files equal a fresh rendering (refresh with
``python -m metalxdp.lab.vagrant_render`` and review the diff). Sameness: the router VM's frr.conf
and its metallb.io resources are what the namespace lab feeds its own FRR router and API server
for the same LabSpec, so the lab's end-to-end tests exercise the VMs' configuration. And the
demo Services really get the VIPs the client VM curls, through the project's own config parser
and allocator.
"""
from __future__ import annotations

import inspect
import ipaddress
import shlex
from pathlib import Path

import pytest
import yaml

from controller.allocator import Allocator
from metalxdp.lab import cluster as namespace_lab
from metalxdp.lab import vagrant_render as vr
from metalxdp.config.parse import parse
from metalxdp.lab.spec import LabSpec
from metalxdp.rig.frr import render_frr_conf
from metalxdp.service import service_spec_from_k8s

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "vagrant" / "generated"

SPECS = {  # the default lab and the variants `metalxdp lab up` offers (--nodes, --ibgp)
    "default": LabSpec(),
    "five_nodes": LabSpec(nodes=5),
    "ibgp": LabSpec(node_asn=64512),
}


def lab_env(text: str) -> dict[str, str]:
    """lab.env as the shell reads it (shlex: quotes removed, comments skipped)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            (parsed,) = shlex.split(value) or [""]
            out[key] = parsed
    return out


def test_committed_files_equal_a_fresh_rendering():
    want = vr.render_all(LabSpec(), vr.deploy_image())
    have = {p.name: p.read_text() for p in GENERATED.iterdir() if p.is_file()}
    assert sorted(have) == sorted(want), "vagrant/generated/ holds other files than the renderer writes"
    for name, text in want.items():
        assert have[name] == text, (f"vagrant/generated/{name} is stale: run "
                                    f"`python -m metalxdp.lab.vagrant_render` and commit the result")


def test_check_flag_reports_drift(tmp_path, capsys):
    assert vr.main(["--check", "--out", str(GENERATED)]) == 0
    vr.main(["--out", str(tmp_path)])
    (tmp_path / "frr.conf").write_text((tmp_path / "frr.conf").read_text() + "! hand edit\n")
    assert vr.main(["--check", "--out", str(tmp_path)]) == 1
    assert "frr.conf is out of date" in capsys.readouterr().out


def test_vm_frr_conf_is_the_namespace_labs():
    # the namespace lab starts FRR with exactly this expression (metalxdp/lab/cluster.py, Lab.up) ...
    assert "render_frr_conf(spec.router_spec())" in inspect.getsource(namespace_lab.Lab.up)
    # ... and the router VM gets the committed file, which is the same text
    assert (GENERATED / "frr.conf").read_text() == render_frr_conf(LabSpec().router_spec())


@pytest.mark.parametrize("name", SPECS)
def test_vm_frr_conf_equals_lab_for_same_inputs(name):
    spec = SPECS[name]
    conf = vr.render_frr(spec)
    assert conf == render_frr_conf(spec.router_spec())
    for node in spec.node_names():       # every node VM is a neighbour, both families
        v4, v6 = spec.host_addresses()[node]
        for addr in (v4[0], v6[0]):
            assert f" neighbor {addr.split('/')[0]} remote-as {spec.node_asn}\n" in conf
    assert "maximum-paths 8" in conf     # ECMP


def test_vm_metallb_resources_are_the_namespace_labs():
    # the namespace lab applies spec.metallb_resources() (Lab._start_metalxdp) ...
    assert "spec.metallb_resources()" in inspect.getsource(namespace_lab.Lab._start_metalxdp)
    # ... and the VMs `kubectl apply -f` the committed file, which holds the same objects
    docs = list(yaml.safe_load_all((GENERATED / "metallb-resources.yaml").read_text()))
    assert docs == LabSpec().metallb_resources()
    parse(docs)  # and the project's one parser accepts them


def test_lab_env_matches_labspec():
    spec = LabSpec()
    env = lab_env((GENERATED / "lab.env").read_text())
    assert env["NODES"].split() == spec.node_names() and int(env["NODE_COUNT"]) == spec.nodes
    assert env["SERVER_NODE"] == "node1"
    for host, (v4, v6) in spec.host_addresses().items():
        assert env[f"{host.upper()}_IP4"] == v4[0].split("/")[0]
        assert env[f"{host.upper()}_IP6"] == v6[0].split("/")[0]
    assert (env["ROUTER_ASN"], env["NODE_ASN"]) == (str(spec.router_asn), str(spec.node_asn))
    assert env["BGP_ROUTES"].split() == list(spec.bgp_routes)
    net4 = ipaddress.ip_network(env["LAB_NET4"])
    assert str(net4.netmask) == env["LAB_NETMASK4"] and str(net4.prefixlen) == env["LAB_PREFIX4"]
    assert env["METALXDP_IMAGE"] == vr.deploy_image()


def test_k3s_networks_stay_in_documentation_and_benchmark_ranges():
    allowed = [ipaddress.ip_network(n) for n in ("198.18.0.0/15", "2001:db8::/32")]
    lan = [ipaddress.ip_network(n) for n in (LabSpec().lan4, LabSpec().lan6)]
    for cidr in (vr.K3S_CLUSTER_CIDR + "," + vr.K3S_SERVICE_CIDR).split(","):
        net = ipaddress.ip_network(cidr)
        assert any(net.subnet_of(a) for a in allowed if a.version == net.version), cidr
        assert not any(net.overlaps(n) for n in lan if n.version == net.version), cidr
    assert ipaddress.ip_address(vr.K3S_CLUSTER_DNS) in ipaddress.ip_network(vr.K3S_SERVICE_CIDR.split(",")[0])


def test_demo_services_get_the_vips_the_client_curls():
    """Through the real parser and allocator: each demo Service gets exactly the VIPs lab.env
    names (one per family), from the pool it asks for, and routes cover the BGP ones."""
    spec = LabSpec()
    env = lab_env((GENERATED / "lab.env").read_text())
    config = parse(spec.metallb_resources())
    alloc = Allocator(config.pools)
    svcs = {d["metadata"]["name"]: d for d in yaml.safe_load_all((GENERATED / "demo.yaml").read_text())
            if d["kind"] == "Service"}
    expect = {"demo-l2": ("lab-l2", env["DEMO_L2_VIPS"].split()),
              "demo-bgp": ("lab-bgp", env["DEMO_BGP_VIPS"].split())}
    assert sorted(svcs) == sorted(expect)
    for name, (pool, vips) in expect.items():
        svc_spec, warnings = service_spec_from_k8s(svcs[name])
        assert not warnings
        got = alloc.allocate(svc_spec)
        assert got.pool_name == pool
        assert sorted(map(str, got.ips)) == sorted(vips)
        assert {ipaddress.ip_address(v).version for v in vips} == {4, 6}
    routes = [ipaddress.ip_network(r) for r in spec.bgp_routes]
    for vip in env["DEMO_BGP_VIPS"].split():
        assert any(ipaddress.ip_address(vip) in r for r in routes), f"client has no route to {vip}"
    lan = [ipaddress.ip_network(n) for n in (spec.lan4, spec.lan6)]
    for vip in env["DEMO_L2_VIPS"].split():
        assert any(ipaddress.ip_address(vip) in n for n in lan), f"L2 VIP {vip} not on the segment"


def test_demo_deployment_selects_the_services_pods():
    docs = list(yaml.safe_load_all((GENERATED / "demo.yaml").read_text()))
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"] == labels
    port = deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert svc["spec"]["selector"] == labels
        assert svc["spec"]["ports"][0]["targetPort"] == port


def test_deploy_image_reads_the_kustomization(tmp_path):
    k = tmp_path / "kustomization.yaml"
    k.write_text("images:\n- name: localhost/metalxdp\n  newTag: 9.9\n")
    assert vr.deploy_image(k) == "localhost/metalxdp:9.9"
    k.write_text("images:\n- name: localhost/metalxdp\n  newName: registry.example.com/mx\n  newTag: '1'\n")
    assert vr.deploy_image(k) == "registry.example.com/mx:1"
    k.write_text("resources: []\n")
    with pytest.raises(ValueError):
        vr.deploy_image(k)


def test_click_command_for_the_cli(tmp_path):
    """`vagrant_render` is ready for metalxdp.cli's subcommand list."""
    from click.testing import CliRunner
    r = CliRunner().invoke(vr.vagrant_render, ["--check", "--out", str(GENERATED)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(vr.vagrant_render, ["--out", str(tmp_path), "--nodes", "4", "--ibgp"])
    assert r.exit_code == 0, r.output
    env = lab_env((tmp_path / "lab.env").read_text())
    assert env["NODES"] == "node1 node2 node3 node4" and env["NODE_ASN"] == env["ROUTER_ASN"]
    assert (tmp_path / "frr.conf").read_text() == render_frr_conf(LabSpec(nodes=4, node_asn=64512).router_spec())
