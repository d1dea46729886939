"""The node agent's DNS side: resolv.conf as the kubelet writes it, hostnames, routable Pod IPs."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from devcluster import cluster_dns
from devcluster.node_agent.container_spec import pod_fqdn, pod_hostname, resolv_conf
from devcluster.node_agent.pod_ips import PodIPAllocator

pytestmark = pytest.mark.unit


def _pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "train-0-abcde", "namespace": "ml"}, "spec": spec}


def test_cluster_first_names_the_cluster_dns_with_the_namespace_search_path() -> None:
    text = resolv_conf(_pod(), "127.53.1.2", "cluster.local")
    assert text == (
        "nameserver 127.53.1.2\n"
        "search ml.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


def test_host_network_default_policy_and_no_cluster_dns_keep_the_hosts_file() -> None:
    assert resolv_conf(_pod(hostNetwork=True), "127.53.1.2", "cluster.local") is None
    assert resolv_conf(_pod(dnsPolicy="Default"), "127.53.1.2", "cluster.local") is None
    assert resolv_conf(_pod(), "", "cluster.local") is None
    with_host_net = _pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    assert "nameserver 127.53.1.2" in (resolv_conf(with_host_net, "127.53.1.2", "c.l") or "")


def test_dns_config_is_appended_and_none_takes_only_it() -> None:
    config = {
        "nameservers": ["192.0.2.9"],
        "searches": ["corp.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    merged = resolv_conf(_pod(dnsConfig=config), "127.53.1.2", "cluster.local") or ""
    assert "nameserver 127.53.1.2\nnameserver 192.0.2.9\n" in merged
    assert "cluster.local corp.example\n" in merged and "options ndots:2 edns0" in merged
    only = resolv_conf(_pod(dnsPolicy="None", dnsConfig=config), "127.53.1.2", "cluster.local")
    assert only == "nameserver 192.0.2.9\nsearch corp.example\noptions ndots:2 edns0\n"


def test_indexed_job_pod_hostname_and_fqdn() -> None:
    pod = _pod(hostname="train-0", subdomain="train-workers")
    assert pod_hostname(pod) == "train-0"
    assert pod_fqdn(pod, "cluster.local") == "train-0.train-workers.ml.svc.cluster.local"
    assert pod_hostname(_pod()) == "train-0-abcde" and pod_fqdn(_pod(), "cluster.local") is None


def test_pod_ips_from_a_cidr_stay_in_the_nodes_block_and_off_loopback() -> None:
    allocator = PodIPAllocator("devnode", lambda address: False, cluster_dns.POD_CIDR)
    addresses = [allocator.allocate(str(i)) for i in range(300)]
    network = ipaddress.IPv4Network(cluster_dns.POD_CIDR)
    parsed = [ipaddress.IPv4Address(a) for a in addresses]
    assert all(a in network and not a.is_loopback for a in parsed)
    assert len(set(addresses)) == 300
    assert not any(a.endswith((".0", ".255")) for a in addresses)
    assert all(allocator.owns(a) for a in addresses)
    other = PodIPAllocator("othernode", lambda address: False, cluster_dns.POD_CIDR)
    assert not other.owns(addresses[0])


def test_corefile_binds_its_own_address_and_reads_the_api() -> None:
    text = cluster_dns.corefile(
        address="127.53.4.5", kubeconfig=Path("/k"), health_port=1, ready_port=2
    )
    assert "bind 127.53.4.5" in text and "kubernetes cluster.local" in text
    assert "kubeconfig /k devcluster" in text and "cache" not in text
