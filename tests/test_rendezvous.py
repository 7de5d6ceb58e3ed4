"""Slurm host lists and the interface towards the rendezvous host (galhpc/train/rendezvous.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from galhpc.train.rendezvous import (
    INTERFACE_VARS,
    RendezvousError,
    expand_nodelist,
    interface_for,
    job_interface,
    socket_interface_env,
)

LISTS = ["node[0-3]", "gpu[007-009,12],login1", "r[1-2]n[01-02]", "node[08-10]", "n[9-11]", "a-b[1-2]", "login1",
         "c[1-2],d[5],e"]


def scontrol_hostnames(nodelist: str, conf) -> list[str]:
    env = {**os.environ, "SLURM_CONF": str(conf)}
    done = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=env, capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="needs Slurm's scontrol as the oracle")
@pytest.mark.parametrize("nodelist", LISTS)
def test_nodelist_expands_as_scontrol_show_hostnames(nodelist, tmp_path):
    conf = tmp_path / "slurm.conf"  # scontrol needs a configuration, not a controller, to expand a list
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost\nNodeName=n1\nPartitionName=p Nodes=n1\n")
    assert expand_nodelist(nodelist) == scontrol_hostnames(nodelist, conf)


@pytest.mark.parametrize("bad", ["", "  ", "a[1-", "a]1[", "a[3-1]", "a[x]", "a[1-2-3]", "a,,b", "a[]"])
def test_bad_nodelists_are_refused_with_the_list_named(bad):
    with pytest.raises(RendezvousError, match="Slurm host list"):
        expand_nodelist(bad)


def test_loopback_is_reached_through_lo():
    assert interface_for("127.0.0.1") == "lo"
    assert interface_for("localhost") == "lo"


def test_interface_variables_set_by_the_user_are_kept():
    chosen = socket_interface_env(["127.0.0.1"], {"NCCL_SOCKET_IFNAME": "ib0"})
    assert chosen == {"GLOO_SOCKET_IFNAME": "lo"}
    chosen = socket_interface_env(["127.0.0.1"], {}, names=("HOROVOD_GLOO_IFACE",))
    assert chosen == {"HOROVOD_GLOO_IFACE": "lo"}
    # all set: nothing is looked up, so even a host that does not exist is fine
    assert socket_interface_env(["host.that.is.not.resolved"], {var: "eth9" for var in INTERFACE_VARS}) == {}


def test_rendezvous_hosts_name_each_host_once():
    from galhpc.train.rendezvous import rendezvous_hosts

    assert rendezvous_hosts("node0", {"SLURM_STEP_NODELIST": "node[0-2]"}) == ["node0", "node1", "node2"]
    assert rendezvous_hosts("node0", {"SLURM_STEP_NODELIST": "node0"}) == ["node0"]


def test_one_node_job_uses_loopback():
    assert job_interface(["127.0.0.1", "localhost"]) == "lo"
    with pytest.raises(RendezvousError, match="no rendezvous host"):
        job_interface([])


def test_a_host_with_no_route_is_refused():
    # inside a fresh network namespace only lo exists, and it is down: no route anywhere
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"]).returncode != 0:
        pytest.skip("needs network namespaces (unshare --net)")
    code = ("from galhpc.train.rendezvous import interface_for, RendezvousError\n"
            "try:\n    interface_for('10.77.0.1')\nexcept RendezvousError as err:\n    print(err)\n")
    done = subprocess.run(["unshare", "--net", "python", "-c", code], capture_output=True, text=True, timeout=120)
    assert "no route to rendezvous host '10.77.0.1'" in done.stdout, done.stderr
