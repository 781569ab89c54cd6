"""metalxdp.bundle: redaction (pure, in tables) and the archive from local parts."""
from __future__ import annotations

import json
import tarfile

import pytest
from click.testing import CliRunner

from metalxdp.bundle import REDACTED, redact_obj, redact_text
from metalxdp.cli import main

TEXT = [
    ("exabgp conf", "neighbor 192.0.2.1 {\n  md5-password s3cr3t;\n}", "  md5-password <redacted>;"),
    ("json", '{"password": "s3cr3t", "peer": "x"}', '{"password": "<redacted>", "peer": "x"}'),
    ("json with escaped quote", '{"password":"s3\\"cr3t"}', '{"password":"<redacted>"}'),
    ("yaml", "  password: s3cr3t\n", '  password: "<redacted>"\n'),
    ("flag", "exabgp --password=s3cr3t", "exabgp --password=<redacted>"),
    ("log kv", 'level=info password=s3cr3t peer=192.0.2.1', 'level=info password="<redacted>" peer=192.0.2.1'),
    ("nothing secret", '{"event":"ipAllocated","ip":"192.0.2.200"}', '{"event":"ipAllocated","ip":"192.0.2.200"}'),
]


@pytest.mark.parametrize("case,text,want", TEXT, ids=[t[0] for t in TEXT])
def test_redact_text(case, text, want):
    got = redact_text(text)
    assert want in got and "s3cr3t" not in got and "s3\\\"cr3t" not in got


OBJS = [
    ("BGPPeer password", {"kind": "BGPPeer", "spec": {"password": "s3cr3t", "peerASN": 64512}},
     {"kind": "BGPPeer", "spec": {"password": REDACTED, "peerASN": 64512}}),
    ("passwordSecret reference kept", {"kind": "BGPPeer", "spec": {"passwordSecret": {"name": "bgp-auth"}}},
     {"kind": "BGPPeer", "spec": {"passwordSecret": {"name": "bgp-auth"}}}),
    ("Secret data", {"kind": "Secret", "data": {"secretkey": "c2VjcmV0"}, "stringData": {"a": "b"}},
     {"kind": "Secret", "data": REDACTED, "stringData": REDACTED}),
    ("selector keys kept", {"kind": "L2Advertisement", "spec": {"nodeSelectors": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}},
     {"kind": "L2Advertisement", "spec": {"nodeSelectors": [
         {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}),
    ("legacy ConfigMap: kept, password inside redacted",
     {"kind": "ConfigMap", "data": {"config": "peers:\n- peer-address: 192.0.2.1\n  password: s3cr3t\n"}},
     {"kind": "ConfigMap", "data": {"config": 'peers:\n- peer-address: 192.0.2.1\n  password: "<redacted>"\n'}}),
    ("a list of items", [{"kind": "BGPPeer", "spec": {"password": "s3cr3t"}}],
     [{"kind": "BGPPeer", "spec": {"password": REDACTED}}]),
]


@pytest.mark.parametrize("case,obj,want", OBJS, ids=[o[0] for o in OBJS])
def test_redact_obj(case, obj, want):
    assert redact_obj(obj) == want


def test_bundle_of_local_files_is_redacted_and_lists_problems(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "agent-node1.log").write_text('{"level":"info","event":"nodeAssigned","password":"s3cr3t"}\n')
    work = tmp_path / "work" / "node1"
    work.mkdir(parents=True)
    (work / "exabgp.conf").write_text("neighbor 192.0.2.1 {\n  md5-password s3cr3t;\n}\n")
    (work / "exabgp.log").write_text("peer 192.0.2.1 up\n")
    out = tmp_path / "b.tar.gz"
    r = CliRunner().invoke(main, ["support-bundle", "--no-cluster", "--local", "--bpffs-dir", str(tmp_path / "none"),
                                  "--workdir", str(tmp_path / "work"), "--include", str(logs), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "could not be collected" in r.output
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    assert set(files) >= {"included/logs/agent-node1.log", "local/exabgp/node1/exabgp.conf",
                          "local/exabgp/node1/exabgp.log", "problems.txt"}
    assert "pinned maps" in files["problems.txt"]
    assert not [n for n, t in files.items() if "s3cr3t" in t]
    assert json.loads(files["included/logs/agent-node1.log"])["event"] == "nodeAssigned"
    assert (out.stat().st_mode & 0o777) == 0o600


def test_agent_endpoint_must_be_node_equals_url():
    r = CliRunner().invoke(main, ["support-bundle", "--no-cluster", "--agent-endpoint", "node1"])
    assert r.exit_code == 2 and "NODE=http://ADDRESS:PORT" in r.output
