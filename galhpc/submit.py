"""Submit `galhpc-train` through submitit: to Slurm when a cluster answers, else as local processes.

    python -m galhpc.submit --config cfg.yaml --folder runs/submitit [--tasks-per-node 4 --gpus-per-node 4]

`TrainJob` is `Checkpointable`: when Slurm announces preemption or the time limit
(submitit's signal, USR2 by default) the trainer finishes its step, saves
`{out_dir}/ckpt.pt`, and submitit requeues the same `TrainJob`, whose next run resumes
from that checkpoint.  With several tasks, each task is one data-parallel rank
(torch.distributed, rendezvous at the job's first host; the rank comes from
submitit's or Slurm's variables through `galhpc.runtime.world.detect_world`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galhpc.config import RunConfig, load_config
from galhpc.extras import require

submitit = require("submitit", "submit", "submitting training through submitit (galhpc.submit)")

log = logging.getLogger("galhpc.submit")


def slurm_answers(timeout_s: float = 10.0) -> bool:
    """Whether a Slurm controller responds (`sinfo` exits 0).

    Parameters
    ----------
    timeout_s : float
        How long to wait for ``sinfo``, in seconds.

    Returns
    -------
    bool
    """
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class TrainJob(submitit.helpers.Checkpointable):
    """`galhpc-train --config CONFIG` as a picklable, requeueable submitit function.

    Parameters
    ----------
    config : str
        Path of the YAML run config.
    overrides : dict
        Keys of the config's ``train`` section to replace (e.g. ``out_dir``, ``epochs``).
    """

    config: str
    overrides: dict[str, Any] = field(default_factory=dict)  # keys of the config's `train` section

    def run_config(self) -> RunConfig:
        """The run config with the overrides applied.

        Returns
        -------
        RunConfig

        Raises
        ------
        ConfigError
            A config that does not match the schema.
        """
        cfg = load_config(self.config)
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **self.overrides))

    def __call__(self) -> dict[str, Any]:
        """Train on this task's rank (what submitit runs); submitit's preemption signal stops it cleanly.

        Returns
        -------
        dict
            ``checkpoint`` (str), ``epochs``, ``steps`` and ``history``.

        Raises
        ------
        TrainingInterrupted
            After preemption, once the checkpoint is saved and the requeue is asked for.
        """
        from galhpc.runtime import setup_logging
        from galhpc.train.distributed import make_backend
        from galhpc.train.trainer import TrainingInterrupted, train

        cfg = self.run_config()
        backend = make_backend(cfg.train.backend, cfg.train.device)
        setup_logging(backend.world.rank)
        preempt_signal = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)  # USR2 unless configured
        submitit_handler = signal.getsignal(preempt_signal)

        def on_preempt(signum: int, frame: Any) -> None:
            """Ask the trainer to stop (it checkpoints after the current step).

            Before its handlers are installed nothing has been trained, so submitit may requeue at once.
            """
            if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
                submitit_handler(signum, frame)
            else:
                os.kill(os.getpid(), signal.SIGUSR1)

        signal.signal(preempt_signal, on_preempt)
        try:
            result = train(cfg, backend=backend, resume=True)
        except TrainingInterrupted as stop:
            log.warning("training stopped at step %d; handing over to submitit to requeue", stop.step)
            signal.signal(preempt_signal, submitit_handler)
            signal.raise_signal(preempt_signal)  # checkpoint() + requeue + exit on rank 0
            raise
        finally:
            signal.signal(preempt_signal, submitit_handler)
            backend.shutdown()
        return {"checkpoint": str(result.checkpoint), "epochs": result.epochs, "steps": result.steps,
                "history": result.history}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The trainer's own checkpoint holds the state: requeue the same job, which resumes from it.

        Parameters
        ----------
        *args, **kwargs
            What submitit passes (the call's arguments; none here).

        Returns
        -------
        submitit.helpers.DelayedSubmission
        """
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, dict(self.overrides)))


def make_executor(
    folder: str | Path,
    cluster: str | None = None,
    *,
    nodes: int = 1,
    tasks_per_node: int = 1,
    gpus_per_node: int = 0,
    cpus_per_task: int = 1,
    timeout_min: int = 60,
    partition: str | None = None,
    signal_delay_s: int = 120,
) -> submitit.AutoExecutor:
    """An AutoExecutor for training: Slurm if a controller answers (or `cluster='slurm'`), else local.

    Parameters
    ----------
    folder : str or Path
        submitit's folder for job files and logs.
    cluster : str, optional
        ``"slurm"`` or ``"local"`` (default: slurm if `slurm_answers`).
    nodes, tasks_per_node, gpus_per_node, cpus_per_task : int
        The allocation; each task is one data-parallel rank.
    timeout_min : int
        Time limit, in minutes.
    partition : str, optional
        Slurm partition.
    signal_delay_s : int
        Seconds before the time limit at which Slurm sends the preemption signal.

    Returns
    -------
    submitit.AutoExecutor
    """
    if cluster is None:
        cluster = "slurm" if slurm_answers() else "local"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = dict(
        name="galhpc-train", nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task, timeout_min=timeout_min,
    )
    if cluster == "slurm":
        params["slurm_signal_delay_s"] = signal_delay_s
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    log.info("submitit executor: %s (%d node(s) x %d task(s))", cluster, nodes, tasks_per_node)
    return executor


def submit_training(config: str | Path, folder: str | Path, overrides: dict[str, Any] | None = None,
                    **executor_options: Any) -> submitit.Job:
    """Submit one training run; `job.result()` waits for it (through any requeues).

    Parameters
    ----------
    config : str or Path
        YAML run config (checked before submitting).
    folder : str or Path
        submitit's folder.
    overrides : dict, optional
        Keys of the config's ``train`` section to replace.
    **executor_options
        Passed to `make_executor`.

    Returns
    -------
    submitit.Job
    """
    job_fn = TrainJob(str(Path(config).resolve()), dict(overrides or {}))
    job_fn.run_config()  # a bad config fails here, not in the queue
    return make_executor(folder, **executor_options).submit(job_fn)


def main(argv: list[str] | None = None) -> int:
    """``python -m galhpc.submit``: submit a training run, print its job id (and its result with ``--wait``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    from galhpc.runtime import setup_logging
    from galhpc.runtime.cli import add_deprecated_alias, run_cli

    p = argparse.ArgumentParser(prog="python -m galhpc.submit", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument("--folder", default="runs/submitit", help="submitit's folder for job files and logs")
    p.add_argument("--cluster", choices=["slurm", "local"], help="default: slurm if `sinfo` answers, else local")
    p.add_argument("--out", dest="out_dir", help="output directory (overrides train.out_dir)")
    add_deprecated_alias(p, "--out-dir", "--out", dest="out_dir")
    p.add_argument("--epochs", type=int, help="overrides train.epochs")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--timeout-min", type=int, default=60)
    p.add_argument("--partition")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    args = p.parse_args(argv)
    setup_logging()

    def body() -> None:
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("epochs", args.epochs)) if v is not None}
        job = submit_training(
            args.config, args.folder, overrides, cluster=args.cluster, nodes=args.nodes,
            tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task, timeout_min=args.timeout_min, partition=args.partition,
        )
        print(job.job_id)
        if args.wait:
            result = job.result()
            print(f"done: {result['epochs']} epochs, {result['steps']} steps, checkpoint {result['checkpoint']}")

    return run_cli("python -m galhpc.submit", body)


if __name__ == "__main__":
    sys.exit(main())
