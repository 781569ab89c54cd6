"""The wanted ServiceL2Status bodies (pure): one per service this node announces, keyed and
labelled as the BGP ones, interfaces sorted."""
from agent.bgp.status import NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL
from agent.status_objects import service_l2_statuses


def test_service_l2_statuses():
    want = service_l2_statuses("node1", {"shop/web": ("eth1", "eth0"), "db/pg": ["eth0"]})
    assert sorted(want) == [("node1", "db", "pg"), ("node1", "shop", "web")]
    web = want[("node1", "shop", "web")]
    assert web["kind"] == "ServiceL2Status" and web["apiVersion"] == "metallb.io/v1beta1"
    assert web["metadata"] == {"generateName": "l2-", "labels": {
        NODE_LABEL: "node1", SERVICE_NAME_LABEL: "web", SERVICE_NAMESPACE_LABEL: "shop"}}
    assert web["status"] == {"node": "node1", "serviceName": "web", "serviceNamespace": "shop",
                             "interfaces": [{"name": "eth0"}, {"name": "eth1"}]}
    assert service_l2_statuses("node1", {}) == {}
