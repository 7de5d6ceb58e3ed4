"""An emulated multi-node Slurm cluster for the tests: one network namespace per node.

Layout (all made by `MultiNodeSlurm.start()`, all removed by `stop()`):

- a "head" network namespace holding a bridge `br0` (10.77.0.254/24) and slurmctld, with
  its own hostname `head`; client commands (sbatch, scontrol, ...) run there (`run`);
- per node `nodeI`: a network namespace with a veth `eth0` (10.77.0.{I+1}/24) plugged into
  the head's bridge, its own hostname (UTS namespace) and mount namespace, in which
  `/tmp` is the node's own folder `ROOT/nodes/nodeI/tmp`, `/dev/shm` a fresh tmpfs and
  `/etc/hosts` (`ROOT/nodes/nodeI/hosts`) names every node -- and, after
  `name_self_loopback(True)`, the node itself as 127.0.1.1, as Debian does; one
  `slurmd -N nodeI` runs there;
- munged in the test's own namespaces (its socket is a file, reachable from every node);
- shared folders (the cluster's root, the checkout these tests run from, the Python
  environment, and the `shared` paths, e.g. pytest's base temporary folder) are bound
  back under each node's private `/tmp` wherever they lie there, as a parallel file
  system seen by every node at the same path: a checkout under `/tmp` (a common place,
  and `$TMPDIR` on clusters) stays visible to every node.

Addresses exist only inside these namespaces; nothing is added to the test's own network
namespace, so no traffic can leave them.  Jobs inherit their node's namespaces, so ranks
on different nodes see different hostnames and `/tmp`, and talk over the bridge.
Needs root, `ip` (iproute2), `unshare` and `nsenter` (util-linux), and a kernel that
allows network namespaces (`namespaces_missing` says why not).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from slurm_cluster import LocalSlurm, missing_requirements, slurm_conf

SUBNET = "10.77.0"
HEAD_ADDR = f"{SUBNET}.254"
SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818
CHECKOUT = Path(__file__).resolve().parents[1]  # the repository these tests run from

# In the node's fresh UTS + mount namespaces: hostname, hosts file, private /dev/shm and
# /tmp (with the shared folders bound back at their own paths), then slurmd.
_NODE_INIT = r"""
set -eu
hostname "$GALHPC_NODE"
mount --bind "$GALHPC_HOSTS" /etc/hosts
mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm
set -f
IFS='
'
for rel in $GALHPC_SHARED_UNDER_TMP; do  # one folder a line: a name may hold spaces
  mkdir -p "$GALHPC_NODE_TMP/$rel"
  mount --bind "/tmp/$rel" "$GALHPC_NODE_TMP/$rel"
done
mount --rbind "$GALHPC_NODE_TMP" /tmp
exec "$@"
"""


def namespaces_missing() -> str | None:
    """Why the emulated cluster cannot start here, or None when it can."""
    reason = missing_requirements()
    if reason is not None:
        return reason
    absent = [tool for tool in ("ip", "unshare", "nsenter", "srun") if shutil.which(tool) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install iproute2 util-linux slurm-client)"
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("network/UTS/mount namespaces are not allowed here: `unshare --net --uts --mount true`: "
                f"{probe.stderr.strip()}")
    name = f"galhpc-probe-{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` is not allowed here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")


class MultiNodeSlurm(LocalSlurm):
    """`nodes` Slurm nodes node0..node{N-1}, each in its own namespaces (module docstring).

    `shared`: folders every node must see at their own path (the cluster's root, the
    checkout and the Python environment always are).
    `slurmd_timeout`: seconds after which slurmctld sets a silent node DOWN.
    """

    def __init__(self, root: Path, nodes: int = 2, cpus: int = 2, shared: tuple[Path, ...] = (),
                 slurmd_timeout: int = 10) -> None:
        super().__init__(root, cpus)
        if not 2 <= nodes <= 250:
            raise ValueError(f"nodes={nodes}: choose 2..250")
        self.nodes = [f"node{i}" for i in range(nodes)]
        self.shared = sorted({Path(p).resolve() for p in (*shared, self.root, CHECKOUT, sys.prefix)})
        self.slurmd_timeout = slurmd_timeout
        self.tag = f"galhpc{os.getpid()}"
        self._netns: list[str] = []

    # ----------------------------------------------------------------- naming
    def netns(self, host: str) -> str:
        """Name of the network namespace of `host` ('head' or a node)."""
        return f"{self.tag}-{host}"

    def address(self, node: str) -> str:
        """The node's address on the cluster network."""
        return f"{SUBNET}.{self.nodes.index(node) + 1}"

    @property
    def nodelist(self) -> str:
        return f"node[0-{len(self.nodes) - 1}]"

    # ---------------------------------------------------------------- commands
    def _enter(self, host: str) -> list[str]:
        """Prefix entering the network namespace of `host` only (unlike `ip netns exec`,
        which would remount /sys and hide the cgroup file system slurmd needs)."""
        return ["nsenter", f"--net=/run/netns/{self.netns(host)}", "--"]

    def run(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A client command (sbatch, scontrol, ...) on the head node."""
        return super().run([*self._enter("head"), *args], check=check, timeout=timeout)

    def on_node(self, node: str, args: list[str]) -> list[str]:
        """The command line that runs `args` on `node` (its network, hostname and /tmp), as ssh would."""
        pid = self.procs[f"slurmd-{node}"].pid
        return ["nsenter", "-t", str(pid), "-n", "-u", "-m", "--", *args]

    def node_state(self, node: str | None = None) -> str:
        """State of `node` (default: the least ready of all, e.g. 'idle' when all are idle)."""
        if node is None:
            states = {self.node_state(n) for n in self.nodes}
            return states.pop() if len(states) == 1 else "mixed-states:" + ",".join(sorted(states))
        out = self.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], check=False).stdout.strip()
        return out.rstrip("*~#")

    # ------------------------------------------------------------------- start
    def _write_files(self) -> None:
        for sub in ("state", "log", *(f"spool/{n}" for n in self.nodes), *(f"nodes/{n}/tmp" for n in self.nodes)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_munge_key()
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname={n} NodeAddr={self.address(n)} CPUs={self.cpus} State=UNKNOWN"
            for n in self.nodes
        )
        self.conf.write_text(slurm_conf(self.root, f"head({HEAD_ADDR})", SLURMCTLD_PORT, SLURMD_PORT,
                                        node_lines, self.nodelist, self.slurmd_timeout))
        for node in self.nodes:
            (self.root / "nodes" / node / "tmp").chmod(0o1777)
        self.name_self_loopback(False)

    def name_self_loopback(self, on: bool) -> None:
        """Give every node's own name the address 127.0.1.1 (Debian's /etc/hosts) or not.

        The files are rewritten in place, so running nodes see the change at once.
        """
        for node in self.nodes:
            own = [f"127.0.1.1 {node}"] if on else []
            lines = ["127.0.0.1 localhost", *own, f"{HEAD_ADDR} head", *(f"{self.address(n)} {n}" for n in self.nodes)]
            with open(self.root / "nodes" / node / "hosts", "w") as hosts:  # same inode: the bind mount follows
                hosts.write("\n".join(lines) + "\n")

    def _make_network(self) -> None:
        head = self.netns("head")
        _ip("netns", "add", head)
        self._netns.append(head)
        _ip("-n", head, "link", "set", "lo", "up")
        _ip("-n", head, "link", "add", "br0", "type", "bridge")
        _ip("-n", head, "addr", "add", f"{HEAD_ADDR}/24", "dev", "br0")
        _ip("-n", head, "link", "set", "br0", "up")
        for i, node in enumerate(self.nodes):
            ns = self.netns(node)
            _ip("netns", "add", ns)
            self._netns.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", head, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", head, "link", "set", f"veth{i}", "master", "br0")
            _ip("-n", head, "link", "set", f"veth{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def start_node(self, node: str) -> None:
        """Start (or restart, after `kill_node`) the node's slurmd in its namespaces."""
        outermost = [p for p in self.shared if not any(p != q and p.is_relative_to(q) for q in self.shared)]
        under_tmp = [str(p.relative_to("/tmp")) for p in outermost if p.is_relative_to("/tmp")]
        env = {**self.env, "GALHPC_NODE": node, "GALHPC_HOSTS": str(self.root / "nodes" / node / "hosts"),
               "GALHPC_NODE_TMP": str(self.root / "nodes" / node / "tmp"),
               "GALHPC_SHARED_UNDER_TMP": "\n".join(under_tmp)}
        with open(self.root / "log" / f"slurmd-{node}.stdout", "ab") as log:
            self.procs[f"slurmd-{node}"] = subprocess.Popen(
                [*self._enter(node), "unshare", "--uts", "--mount", "--propagation", "private",
                 "sh", "-c", _NODE_INIT, "node-init", "slurmd", "-D", "-N", node, "-f", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def start(self, timeout: float = 90.0) -> MultiNodeSlurm:
        self._write_files()
        self._make_network()
        self._start_munged(timeout)
        self._spawn("slurmctld", [*self._enter("head"), "unshare", "--uts", "sh", "-c",
                                  'hostname head && exec "$@"', "head-init",
                                  "slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, timeout, "slurmctld")
        for node in self.nodes:
            self.start_node(node)
        self._wait_for(lambda: self.node_state() == "idle", timeout, "every node idle")
        return self

    # -------------------------------------------------------------------- stop
    def _pids_in(self, ns: str) -> list[int]:
        proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(p) for p in proc.stdout.split()]

    def kill_node(self, node: str) -> None:
        """Power the node off: SIGKILL every process in its namespace (slurmd, job steps, ranks)."""
        for pid in self._pids_in(self.netns(node)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc = self.procs.pop(f"slurmd-{node}", None)
        if proc is not None:
            proc.wait(timeout=10)

    def wait_node(self, node: str, states: tuple[str, ...], timeout: float) -> str:
        """Wait until slurmctld reports the node in one of `states`; returns it."""
        return self._wait_state(lambda: self.node_state(node), states, timeout, node)

    def stop(self) -> None:
        """Cancel jobs, stop every daemon by PID, kill what is left in the namespaces, delete them."""
        try:
            self._stop_daemons([f"slurmd-{n}" for n in self.nodes] + ["slurmctld", "munged"])
        finally:  # the namespaces go even when a daemon does not answer
            for ns in reversed(self._netns):
                for pid in self._pids_in(ns):  # job processes a stopped slurmd left behind
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self._netns.clear()
