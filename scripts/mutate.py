#!/usr/bin/env python3
"""Mutation check: plant realistic bugs one at a time in a copy of the repository and run the
tests that should catch each; print killed / survived and the kill rate (`make mutate`).

Each mutant replaces one exact snippet of one file (a snippet no longer found is reported
STALE: the code moved and the mutant needs updating, which fails the run like a survivor).
The copy is the working tree as git sees it (tracked and untracked, not ignored, files) plus
the compiled extension, in a temporary directory put first on PYTHONPATH; the tests run
there with `pytest -x`, so a killed mutant usually stops at its first failing test.

    python scripts/mutate.py              # every mutant, fast tests only
    python scripts/mutate.py --slow       # also the slow tests listed for some mutants
    python scripts/mutate.py --only gamma_over_batch sigma_for_variance
    python scripts/mutate.py --list

Exit status 1 if any mutant survived or is stale.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file relative to the repository root
    old: str  # exact snippet, found exactly once
    new: str
    tests: tuple[str, ...]  # test files or node ids (globs allowed) that should kill it
    slow: tuple[str, ...] = field(default=())  # slow tests run only with --slow
    why: str = ""


MUTANTS = [
    # -- the mixture (issue 26's planted bugs first) --------------------------------------
    Mutant("sigma_for_variance", "galhpc/priors.py",
           "diff.pow(2) / var_c.unsqueeze(0))", "diff.pow(2) / var_c.sqrt().unsqueeze(0))",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="γ and log p(c, z) with σ in place of σ²"),
    Mutant("gamma_over_batch", "galhpc/models/vade.py",
           "return torch.log_softmax(scaled, dim=1)", "return torch.log_softmax(scaled, dim=0)",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="training γ normalised over the batch"),
    Mutant("mixture_never_used", "galhpc/models/vade.py",
           'if state.weight("gmm") > 0:', 'if state.weight("gmm") > 1:',
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), slow=("tests/test_science_clusters.py",),
           why="unit-Gaussian KL throughout: the mixture stays at its init"),
    Mutant("minmax_over_batch", "galhpc/priors.py",
           "top = log_joint.max(dim=1, keepdim=True).values\n    bottom = log_joint.min(dim=1, keepdim=True).values",
           "top = log_joint.max().expand(len(log_joint), 1)\n    bottom = log_joint.min().expand(len(log_joint), 1)",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="min-max scaling over the whole batch"),
    Mutant("pi_ignored_in_gamma", "galhpc/priors.py",
           "return log_pi.unsqueeze(0) + log_norm.sum(dim=-1)", "return log_norm.sum(dim=-1)",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="p(c) left out of log p(c, z)"),
    Mutant("categorical_kl_sign", "galhpc/priors.py",
           "gamma * (log_gamma - log_pi.unsqueeze(0))", "gamma * (log_pi.unsqueeze(0) - log_gamma)",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="KL(q(c|x) || p(c)) with its sign flipped"),
    Mutant("entropy_term_drops_one", "galhpc/priors.py",
           "entropy_term = -0.5 * torch.sum(1.0 + logvar, dim=-1)", "entropy_term = -0.5 * torch.sum(logvar, dim=-1)",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="E[log q(z|x)] without its constant"),
    Mutant("unit_kl_logvar_sign", "galhpc/priors.py",
           "mu.pow(2) + logvar.exp() - 1.0 - logvar", "mu.pow(2) + logvar.exp() - 1.0 + logvar",
           ("tests/test_vade_oracles.py", "tests/test_vade.py"), why="α-phase KL with log σ² of the wrong sign"),
    Mutant("gmm_init_std_for_variance", "galhpc/mixture/diagonal.py",
           "torch.as_tensor(gmm.covariances_, dtype=torch.float32)",
           "torch.as_tensor(np.sqrt(gmm.covariances_), dtype=torch.float32)",
           ("tests/test_vade.py", "tests/test_gmm.py"), why="mixture initialised with σ for σ²"),
    Mutant("catalogue_gamma_of_a_sample", "galhpc/inference/encode.py",
           "self.model.cluster_probs(enc.mu)",
           "self.model.cluster_probs(enc.mu + torch.exp(0.5 * enc.logvar) * torch.randn_like(enc.mu))",
           ("tests/test_vade_oracles.py", "tests/test_catalog_encode.py"),
           why="catalogue γ of a sampled z instead of μ"),
    # -- the s3VDC schedule ---------------------------------------------------------------
    Mutant("anneal_without_alpha", "galhpc/train/schedule.py",
           'return {"kl": beta**c.exponent + c.alpha, "gmm": 1.0}', 'return {"kl": beta**c.exponent, "gmm": 1.0}',
           ("tests/test_vade_oracles.py", "tests/test_schedule.py"), why="annealing weight β^u without α"),
    Mutant("anneal_per_epoch_only", "galhpc/train/schedule.py",
           "beta = (since + batch / max(n_batches, 1)) / c.t_beta", "beta = since / c.t_beta",
           ("tests/test_vade_oracles.py", "tests/test_schedule.py"), why="β steps once per epoch, not per batch"),
    Mutant("last_period_restarts", "galhpc/train/schedule.py",
           "if since >= c.periods * period_length:", "if since > c.periods * period_length:",
           ("tests/test_vade_oracles.py", "tests/test_schedule.py"), why="the epoch after the last period anneals again"),
    Mutant("mixture_init_late", "galhpc/train/schedule.py",
           "epoch == self.cfg.t_alpha - 1", "epoch == self.cfg.t_alpha",
           ("tests/test_vade_oracles.py", "tests/test_schedule.py"), why="GMM initialised one epoch after α-training"),
    # -- Regier's test --------------------------------------------------------------------
    Mutant("regier_comparison_reversed", "galhpc/report/regier.py",
           "wins_sse = int((sse_model < sse_gauss).sum())", "wins_sse = int((sse_model > sse_gauss).sum())",
           ("tests/test_report_regier.py",), why="the model's wins counted as its losses"),
    Mutant("regier_gain_sign", "galhpc/report/regier.py",
           "float((ll_model - ll_gauss).mean() / n_pixels)", "float((ll_gauss - ll_model).mean() / n_pixels)",
           ("tests/test_report_regier.py",), why="mean log-likelihood gain with its sign flipped"),
    Mutant("regier_loglik_wins_reversed", "galhpc/report/regier.py",
           "wins_ll = int((ll_model > ll_gauss).sum())", "wins_ll = int((ll_model < ll_gauss).sum())",
           ("tests/test_report_regier.py",), why="log-likelihood wins reversed"),
    # -- figures --------------------------------------------------------------------------
    Mutant("scatter_without_points", "galhpc/report/figures.py",
           "ax.scatter(xy[sel, 0], xy[sel, 1], s=4, label=str(k))", "ax.scatter([], [], s=4, label=str(k))",
           ("tests/test_report_figures.py",), why="a t-SNE panel drawn without its points"),
    Mutant("grid_drops_last_stamp", "galhpc/report/figures.py",
           "if j < len(shown):", "if j < len(shown) - 1:",
           ("tests/test_report_figures.py",), why="the last stamp of every grid row left blank"),
    # -- training batches -----------------------------------------------------------------
    Mutant("masks_flipped_apart", "galhpc/data/loader.py",
           "data[name] = random_flips(values, np.random.default_rng(np.random.SeedSequence(key)))",
           "data[name] = random_flips(values, np.random.default_rng(np.random.SeedSequence(key + 1)))",
           ("tests/test_trainer_batch_columns.py", "tests/test_data_loader.py"),
           why="masks flipped independently of their images"),
    # -- catalogue contracts (killed by the integrity/ci helpers' tests where noted) -------
    Mutant("seed_not_in_fingerprint", "galhpc/inference/generate.py",
           '        "seed": options.seed,\n        "batch_size": options.batch_size,',
           '        "batch_size": options.batch_size,',
           ("tests/test_catalog_generate.py", "tests/test_catalog_contracts*.py", "tests/test_integrity_contracts*.py"),
           why="a resumed generate under another --seed mixes two seeds"),
    Mutant("shards_by_local_rank", "galhpc/inference/driver.py",
           "mine = assign_shards(pending, world.rank, world.size)",
           "mine = assign_shards(pending, world.local_rank, world.size)",
           ("tests/test_catalog_shards.py", "tests/test_catalog_contracts*.py", "tests/test_integrity_contracts*.py"),
           slow=("tests/test_multinode.py",), why="ranks on different hosts write the same shards"),
    Mutant("shard_short_by_one_row", "galhpc/io/catalog.py",
           "if shape[0] < seg.offset + seg.size:", "if shape[0] < seg.offset + seg.size - 1:",
           ("tests/test_io_catalog.py", "tests/test_catalog_contracts*.py", "tests/test_integrity_contracts*.py"),
           why="open_catalog accepts a shard one row short"),
    Mutant("atomic_cleanup_on_exception_only", "galhpc/runtime/files.py",
           "    except BaseException as err:\n        tmp.unlink(missing_ok=True)",
           "    except Exception as err:\n        tmp.unlink(missing_ok=True)",
           ("tests/test_runtime_files.py", "tests/test_integrity_atomic*.py", "tests/test_atomic*.py"),
           why="a KeyboardInterrupt inside an atomic write leaves its temporary"),
]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), plus the extension."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for ext in ROOT.glob("galhpc/_ext*.so"):
        shutil.copy2(ext, dest / "galhpc" / ext.name)


def test_args(tree: Path, patterns: tuple[str, ...]) -> list[str]:
    """Patterns to existing test paths in the copy (node ids pass through)."""
    out = []
    for pattern in patterns:
        base = pattern.split("::", 1)[0]
        if any(ch in base for ch in "*?["):
            out += sorted(str(Path(p).relative_to(tree)) for p in glob.glob(str(tree / base)))
        elif (tree / base).exists():
            out.append(pattern)
    return out


def run_mutant(tree: Path, mutant: Mutant, slow: bool, timeout: float) -> tuple[str, str, float]:
    target = tree / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return "STALE", f"snippet found {original.count(mutant.old)} times in {mutant.path}", 0.0
    tests = test_args(tree, mutant.tests + (mutant.slow if slow else ()))
    if not tests:
        return "NO TESTS", "none of its test files exist", 0.0
    target.write_text(original.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "tests")]),
           "GALHPC_PROGRESS": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    marker = "slow or not slow" if slow else "not slow"
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", marker,
                               *tests], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()
    except subprocess.TimeoutExpired:
        rc, tail = -1, ["timed out"]
    finally:
        target.write_text(original)
    elapsed = time.monotonic() - start
    failed = next((line for line in tail if line.startswith(("FAILED", "ERROR"))), tail[-1] if tail else "")
    if rc == 0:
        return "SURVIVED", f"{', '.join(tests)} pass", elapsed
    if rc in (1, 2):  # tests failed, or could not even be collected (an import broke)
        return "KILLED", failed[:160], elapsed
    return "ERROR", f"pytest exit {rc}: {failed[:160]}", elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--slow", action="store_true", help="also run each mutant's slow tests")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mutant (default 900)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        p.error(f"unknown mutant(s): {sorted(set(args.only) - {m.name for m in MUTANTS})}")
    if args.list:
        for m in chosen:
            print(f"{m.name:34s} {m.path:28s} {m.why}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="galhpc-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for m in chosen:
            status, detail, seconds = run_mutant(tree, m, args.slow, args.timeout)
            results.append((m, status))
            print(f"{status:9s} {m.name:34s} {seconds:6.1f}s  {detail}", flush=True)
    killed = sum(s == "KILLED" for _, s in results)
    scored = sum(s in ("KILLED", "SURVIVED") for _, s in results)
    print(f"\nkilled {killed} of {scored} mutants ({100 * killed / max(scored, 1):.0f} %)"
          + "".join(f"; {sum(s == k for _, s in results)} {k.lower()}" for k in ("STALE", "NO TESTS", "ERROR")
                    if any(s == k for _, s in results)))
    return 0 if all(s == "KILLED" for _, s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
