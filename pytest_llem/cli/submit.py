"""``submit STUDY --shards N``: a study's shards as a Slurm job array (submitit), then one merged study.

Each array task runs ``pytest STUDY --llem-shard=K/N`` on its own node (one GPU per task by
default: ``--gres=gpu:1``; ``--gpus 0`` for CPU studies) into a results directory of this
submission; when every task has ended the shards are merged (results/merge.py) into one study
directory, which ``show`` and ``compare`` (the regression gate) read like a local run's.
``--no-wait`` prints the job ids and the merge command instead of waiting.

submitit (the ``cluster`` extra) is imported only here, when the command runs. ``--executor
local`` runs the same array as local processes (submitit's local executor): for a machine
without Slurm, and for trying a submission out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "submit",
        help="run a study's shards as a Slurm job array (submitit) and merge them",
        description="Submit the N shards of STUDY (pytest STUDY --llem-shard=K/N) as one Slurm job array through"
        " submitit, one GPU per task, wait for them and merge their study directories into one. --pytest-arg"
        " passes an argument to every shard's pytest.",
    )
    parser.add_argument("study", type=Path, metavar="STUDY", help="the study file (*.llem.yaml)")
    parser.add_argument("--shards", type=int, required=True, metavar="N", help="how many array tasks (shards)")
    parser.add_argument("--partition", default=None, help="the Slurm partition")
    parser.add_argument("--gpus", type=int, default=1, metavar="G", help="GPUs per task, as --gres=gpu:G (0: a CPU study)")
    parser.add_argument("--gres", default=None, help="the task's --gres instead (e.g. gpu:h200:1)")
    parser.add_argument("--cpus-per-task", type=int, default=None, metavar="C")
    parser.add_argument("--mem", default=None, help="memory per task, as sbatch --mem takes it (e.g. 64G)")
    parser.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES", help="time limit per task (default a day)")
    parser.add_argument("--parallel", type=int, default=None, metavar="P", help="at most P tasks at once (--array=...%%P)")
    parser.add_argument("--results-dir", type=Path, default=None, help="where the shards write (default results/<study>-shards-<time>)")
    parser.add_argument("--out", type=Path, default=None, help="the merged study directory (default <results-dir>/merged)")
    parser.add_argument("--log-dir", type=Path, default=None, help="submitit's job files and logs (default <results-dir>/_jobs)")
    parser.add_argument("--executor", choices=("slurm", "local"), default="slurm", help="slurm (default) or local processes")
    parser.add_argument("--no-wait", action="store_true", help="print the job ids and the merge command, do not wait")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument(
        "--pytest-arg", dest="pytest_args", action="append", default=[], metavar="ARG",
        help="an argument for every shard's pytest (repeatable), e.g. --pytest-arg=--llem-compare-fail=median:5%%",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run_shard(study: str, index: int, count: int, results_dir: str, pytest_args: list[str], cwd: str) -> dict[str, Any]:
    """One array task: pytest on shard ``index`` of ``count`` (runs on the node; module level, so it pickles)."""
    command = [
        sys.executable, "-m", "pytest", study, f"--llem-shard={index}/{count}", f"--llem-results-dir={results_dir}",
        "-p", "no:cacheprovider", *pytest_args,
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=cwd, check=False)
    return {"shard": f"{index}/{count}", "returncode": proc.returncode, "host": socket.gethostname()}


def _executor(args: argparse.Namespace, log_dir: Path) -> Any:
    try:
        submitit = importlib.import_module("submitit")
    except ImportError:
        raise UsageProblem('submit needs submitit: pip install "pytest-llem[cluster]" (or pip install submitit)') from None
    if args.executor == "local":
        executor = submitit.LocalExecutor(folder=str(log_dir))
        executor.update_parameters(timeout_min=args.time, gpus_per_node=args.gpus)
        return executor
    executor = submitit.SlurmExecutor(folder=str(log_dir))
    gres = args.gres or (f"gpu:{args.gpus}" if args.gpus > 0 else None)
    parameters: dict[str, Any] = {"time": args.time, "job_name": f"llem-{args.study.stem}", "array_parallelism": args.parallel or args.shards}
    for key, value in (("partition", args.partition), ("gres", gres), ("cpus_per_task", args.cpus_per_task), ("mem", args.mem)):
        if value is not None:
            parameters[key] = value
    executor.update_parameters(**parameters)
    return executor


def _check(args: argparse.Namespace) -> None:
    if not args.study.is_file():
        raise UsageProblem(f"study file {args.study} does not exist")
    if args.shards < 1:
        raise UsageProblem(f"--shards must be at least 1, got {args.shards}")
    if args.gpus < 0:
        raise UsageProblem(f"--gpus must be 0 (a CPU study) or more, got {args.gpus}")
    if args.executor == "slurm" and not args.no_wait and os.environ.get("SLURM_JOB_ID"):
        pass  # submitting from inside a job (an allocation) is allowed; Slurm nests the array as its own job


def run(args: argparse.Namespace) -> int:
    _check(args)
    from pytest_llem.results.writer import utc_stamp

    study = args.study.resolve()
    name = study.name.split(".llem.")[0]
    results_dir = (args.results_dir or Path("results") / f"{name}-shards-{utc_stamp()}").resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    out = (args.out or results_dir / "merged").resolve()
    log_dir = (args.log_dir or results_dir / "_jobs").resolve()
    extra = list(args.pytest_args)
    executor = _executor(args, log_dir)
    with executor.batch():
        jobs = [
            executor.submit(run_shard, str(study), k, args.shards, str(results_dir), extra, str(Path.cwd()))
            for k in range(1, args.shards + 1)
        ]
    ids = [str(job.job_id) for job in jobs]
    merge_command = f"python -m pytest_llem merge {out} {results_dir}"
    if args.no_wait:
        payload: dict[str, Any] = {"job_ids": ids, "results_dir": str(results_dir), "merge": merge_command}
        if args.json:
            emit_json(payload)
        else:
            emit_lines([f"submitted {len(ids)} shard(s): {' '.join(ids)}", f"when done: {merge_command}"])
        return 0
    outcomes: list[dict[str, Any]] = []
    for job in jobs:
        try:
            outcomes.append(job.result())
        except Exception as exc:  # noqa: BLE001 - the task died (node failure, time limit, cancelled): say which, merge what there is
            outcomes.append({"shard": None, "job_id": str(job.job_id), "returncode": None, "error": str(exc).splitlines()[-1:]})
    from pytest_llem.results.merge import MergeRefused, merge_studies

    try:
        merged = merge_studies(out, [results_dir])
    except MergeRefused as exc:
        raise UsageProblem(f"the shards ran ({', '.join(ids)}) but cannot be merged: {exc}") from None
    failed = [o for o in outcomes if o.get("returncode") not in (0,)]
    status = 0 if merged.complete and not failed else 1
    if args.json:
        emit_json({"job_ids": ids, "shards": outcomes, "study_dir": str(out), "complete": merged.complete,
                   "missing_cells": merged.missing_cells, "not_completed": merged.not_completed,
                   "summary": merged.manifest["summary"]})  # fmt: skip
        return status
    lines = [f"jobs {' '.join(ids)}: shards ran in {results_dir}"]
    for outcome in outcomes:
        lines.append(f"  shard {outcome.get('shard') or outcome.get('job_id')}: pytest exit {outcome.get('returncode')} on {outcome.get('host', '?')}"
                     + (f" ({outcome['error']})" if outcome.get("error") else ""))  # fmt: skip
    summary = merged.manifest["summary"]
    lines.append(f"merged: {out}: {summary['completed']} of {summary['total_experiments']} cells completed"
                 + ("" if merged.complete else f"; INCOMPLETE: missing {merged.missing_cells + merged.not_completed}"))  # fmt: skip
    lines.append(f"gate: python -m pytest_llem compare BASELINE {out} --rule ...")
    emit_lines(lines)
    return status
