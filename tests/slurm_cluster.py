"""A real one-node Slurm cluster on localhost for the tests: munged, slurmctld, slurmd.

Everything (munge key and socket, slurm.conf, state, spool, logs) lives under one
temporary folder; credentials expire after 10 s (default 120 s), which is also how long
a requeued job waits before it may start again; the daemons run in the foreground as children of the test process
and are stopped by PID.  Client commands find the cluster through SLURM_CONF (see
`LocalSlurm.env`).  Needs root (slurmd launches jobs as their user) and Debian's
slurm-wlm + munge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODE = "galhpc-node"
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")


RENDEZVOUS_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "HOROVOD_GLOO_IFACE", "MASTER_ADDR", "MASTER_PORT")


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_conf(root: Path, cpus: int) -> str:
    host = socket.gethostname()
    nodes = f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN"
    return slurm_conf(root, f"{host}(127.0.0.1)", _free_port(), _free_port(), nodes, NODE)


def slurm_conf(root: Path, controller: str, ctld_port: int, slurmd_port: int, node_lines: str, nodes: str,
               slurmd_timeout: int = 60) -> str:
    """slurm.conf of a test cluster whose files all live under `root`.

    `controller` is SlurmctldHost (`name(address)`), `node_lines` the NodeName lines and
    `nodes` the partition's node list; a node silent for `slurmd_timeout` s is set DOWN.
    """
    return f"""\
ClusterName=galhpctest
SlurmctldHost={controller}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout={slurmd_timeout}
MessageTimeout=30
{node_lines}
PartitionName={PARTITION} Nodes={nodes} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start with `start()`, stop with `stop()` (also a context manager)."""

    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue, scancel, submitit) and the daemons:
        the test process's, less the rendezvous choices an in-process training test may have
        exported into it (galhpc sets GLOO_SOCKET_IFNAME etc. for its own process group; a
        job submitted with them would bind every node to that interface, e.g. loopback)."""
        env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARIABLES}
        return {**env, "SLURM_CONF": str(self.conf)}

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / "log" / f"{name}.stdout", "ab") as log:
            self.procs[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def _write_munge_key(self) -> Path:
        """A fresh munge key in ROOT/munge (mode 0700/0600, as munged insists); returns the folder."""
        munge = self.root / "munge"
        munge.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (self.root / "plugstack.conf").write_text("")
        return munge

    def _start_munged(self, timeout: float) -> None:
        munge = self.root / "munge"
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={munge}/munge.socket", f"--key-file={munge}/munge.key",
            f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
            f"--log-file={self.root}/log/munged.log",
        ])
        self._wait_for(lambda: (munge / "munge.socket").exists(), timeout, "munged socket")

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        for sub in ("state", f"spool/{NODE}", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_munge_key()
        self.conf.write_text(_slurm_conf(self.root, self.cpus))
        self._start_munged(timeout)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, timeout, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait_for(lambda: self.node_state() in ("idle", "mixed", "allocated"), timeout, "slurmd idle")
        return self

    def node_state(self) -> str:
        out = self.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], check=False).stdout.strip()
        return out.rstrip("*~#")

    def run(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; logs:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"local Slurm: {what} not ready after {timeout:.0f} s; logs:\n{self.logs()}")

    def logs(self, tail: int = 2000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"== {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def job_field(self, job_id: str, field: str) -> str | None:
        """One field of `scontrol show job` (e.g. JobState, Restarts, ExitCode), None if gone."""
        proc = self.run(["scontrol", "-o", "show", "job", job_id], check=False)
        for token in proc.stdout.split():
            key, _, value = token.partition("=")
            if key == field:
                return value
        return None

    def wait_job(self, job_id: str, states: tuple[str, ...], timeout: float) -> str:
        """Wait until the job reaches one of `states`; returns it."""
        return self._wait_state(lambda: self.job_field(job_id, "JobState"), states, timeout, f"job {job_id}")

    def _wait_state(self, state_of, states: tuple[str, ...], timeout: float, what: str) -> str:
        """Poll `state_of()` every second until it is one of `states`; returns it."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = state_of()
            if state in states:
                return state
            time.sleep(1.0)
        raise TimeoutError(f"{what} still {state!r} after {timeout:.0f} s (wanted {states});\n{self.logs()}")

    def _stop_daemons(self, names: list[str]) -> None:
        """Cancel leftover jobs, then SIGTERM the daemons `names` by PID (SIGKILL after 20 s)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "--partition", PARTITION], check=False)
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Cancel leftover jobs, then stop slurmd, slurmctld and munged by PID."""
        self._stop_daemons(["slurmd", "slurmctld", "munged"])

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
