#!/usr/bin/env python3
"""Hyper-parameter sweeps as one SLURM job array (or submitit's map_array), from a TOML sweep file.

    python launchers/sweep.py submit slurm/sweeps/softmax-lr.toml [--backend slurm|submitit] [--throttle N] [--dry-run]
    python launchers/sweep.py status slurm/sweeps/softmax-lr.toml
    python launchers/sweep.py report slurm/sweeps/softmax-lr.toml

Each trial is its own run directory OUT/trial-NNN with its config.toml. Submitting again skips the
finished trials and those still queued or running, and resumes the others (--resume auto in their
own directory). The sweep file's format is in mnist_hpc/sweep.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mnist_hpc import cli, jobspec, submitting, sweep
from mnist_hpc.rundir import write_json_atomic, write_text_atomic

SUBMISSIONS = "submissions.json"  # OUT/submissions.json: every array submitted, its job ids and logs
# squeue states of a job that may still run: it is left alone on re-submission
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}


# ------------------------------------------------------------------ the scheduler
def scheduler(*argv: str) -> str | None:
    """A SLURM client's output, or None where it fails or SLURM is not installed."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def job_states(records: list[dict]) -> dict[str, str]:
    """Trial name -> the SLURM state of its newest submission's array task (squeue, then sacct once it
    has left the queue); trials SLURM no longer knows are left out."""
    by_task: dict[str, str] = {}
    for array in {record["job"] for record in records if record.get("cluster") == "slurm"}:
        queued = scheduler("squeue", "-h", "-r", "-j", array, "-o", "%i %T") or ""
        ended = scheduler("sacct", "-n", "-P", "-X", "-j", array, "-o", "JobID,State") or ""
        for line in ended.splitlines():  # "12_3|CANCELLED by 0"
            task, _, state = line.partition("|")
            by_task[task.strip()] = state.split()[0] if state.split() else "UNKNOWN"
        for line in queued.splitlines():  # "12_3 RUNNING": the queue is newer than the accounting
            task, _, state = line.strip().partition(" ")
            by_task[task] = state.strip()
    states = {}
    for record in records:  # oldest first: a newer submission of a trial overrides
        for name, task in record["trials"].items():
            if task["job_id"] in by_task:
                states[name] = by_task[task["job_id"]]
            else:
                states.pop(name, None)
    return states


def newest_tasks(records: list[dict]) -> dict[str, dict]:
    """Trial name -> its newest submission's {"job_id", "log"}."""
    return {name: task for record in records for name, task in record["trials"].items()}


def read_records(out: Path) -> list[dict]:
    path = out / SUBMISSIONS
    return json.loads(path.read_text())["submissions"] if path.exists() else []


def add_record(out: Path, record: dict) -> None:
    write_json_atomic(out / SUBMISSIONS, {"submissions": [*read_records(out), record]})


def trial_state(trial: sweep.Trial, states: dict[str, str], tasks: dict[str, dict]) -> str:
    """completed / diverged (its metrics.json), running / pending (the queue), else failed with what is
    known (the scheduler's state, the epoch it can resume from, its log), or not submitted."""
    result = sweep.metrics(trial)
    if result and result.get("status") in sweep.FINISHED:
        return result["status"]
    state = states.get(trial.name)
    if state in ACTIVE:
        return state.lower()
    if trial.name not in tasks:
        return "not submitted"
    checkpoints = sorted((trial.run_dir / "checkpoints").glob("ckpt-*.npz"))
    facts = [state or "ended", *([f"resumes after {checkpoints[-1].stem}"] if checkpoints else []),
             f"log: {tasks[trial.name]['log']}"]
    return f"failed ({'; '.join(facts)})"


# ------------------------------------------------------------------ submit
def job_spec(loaded: sweep.Sweep, args: tuple[str, ...] = ("train",)) -> jobspec.JobSpec:
    """Each trial's resources: the train template's, with the sweep file's [job] table over them."""
    job = {key: loaded.job.get(key) for key in sweep.JOB_KEYS}
    if job["job_name"] is None and jobspec.NAME_RE.fullmatch(f"sweep-{loaded.path.stem}"):
        job["job_name"] = f"sweep-{loaded.path.stem}"
    return cli.spec_from_options(jobspec.TEMPLATES["train_simple"].spec, argparse.Namespace(**job), args=args,
                                 python=sys.executable)


def check_array_limit(count: int, loaded: sweep.Sweep) -> None:
    """Refuse, before anything is written or submitted, more trials than one array may hold here."""
    config = scheduler("scontrol", "show", "config")
    if config is not None:
        sweep.check_array_size(count, sweep.max_array_size(config), str(loaded.path))


def submit_sbatch(loaded: sweep.Sweep, trials: list[sweep.Trial], spec: jobspec.JobSpec, throttle: int) -> dict:
    """One job array; task i trains trials[i] (the list file maps the index to the trial's directory)."""
    number = len(read_records(loaded.out)) + 1
    arrays, logs = loaded.out / "arrays", loaded.out / "logs"
    arrays.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    trials_file, script = arrays / f"array-{number}.txt", arrays / f"array-{number}.sbatch"
    write_text_atomic(trials_file, "".join(f"{trial.run_dir}\n" for trial in trials))
    write_text_atomic(script, sweep.array_script(spec, trials_file, len(trials), throttle, logs))
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"sbatch {script}: {result.stderr.strip() or result.returncode}")
    array = result.stdout.strip().split(";")[0]
    return {"backend": "slurm", "cluster": "slurm", "job": array, "script": str(script),
            "trials": {trial.name: {"job_id": f"{array}_{i}", "log": str(logs / f"{array}_{i}.out")}
                       for i, trial in enumerate(trials)}}


def submit_submitit(loaded: sweep.Sweep, trials: list[sweep.Trial], spec: jobspec.JobSpec, throttle: int,
                    setup: list[str]) -> tuple[dict, list]:
    """submitit's map_array of the Checkpointable :class:`submitting.Ranks` (a requeued task resumes)."""
    executor = submitting.make_executor(spec, loaded.out / "submitit", setup, array_parallelism=throttle)
    specs = [spec.with_resources(args=sweep.train_args(trial)) for trial in trials]
    jobs = executor.map_array(submitting.Ranks(), specs, [str(trial.run_dir / "metrics.json") for trial in trials])
    record = {"backend": "submitit", "cluster": executor.cluster, "job": jobs[0].job_id.split("_")[0],
              "trials": {trial.name: {"job_id": job.job_id, "log": str(job.paths.stderr)}
                         for trial, job in zip(trials, jobs)}}
    return record, jobs


def wait_submitit(loaded: sweep.Sweep, trials: list[sweep.Trial], jobs: list, timeout: float) -> int:
    names = {job.job_id: trial for trial, job in zip(trials, jobs)}
    failed = 0
    try:
        for done, outcome in enumerate(submitting.outcomes(jobs, timeout), start=1):
            trial = names[outcome.job.job_id]
            if outcome.error:
                failed += 1
                print(f"[{done}/{len(jobs)}] {trial.name} failed: {outcome.error}; logs: {outcome.log}", file=sys.stderr)
            else:
                print(f"[{done}/{len(jobs)}] {trial.name} {describe(trial)}: {outcome.result['status']}, "
                      f"test accuracy {outcome.result['test_accuracy']:.4f}", flush=True)
    except submitting.WaitTimeout as err:
        cli.print_error(err)
        return 1
    return 1 if failed else 0


def describe(trial: sweep.Trial) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in trial.swept.items()) + ")" if trial.swept else ""


def cmd_submit(loaded: sweep.Sweep, options: argparse.Namespace) -> int:
    spec = job_spec(loaded)
    first = loaded.trials[0].config
    cli.check_data(first.data_dir)
    cli.check_writable_dir(loaded.out, f"{loaded.path}: out")
    records = read_records(loaded.out)
    states = job_states(records)
    finished = [t for t in loaded.trials if sweep.finished(t)]
    active = [t for t in loaded.trials if t not in finished and states.get(t.name) in ACTIVE]
    to_run = [t for t in loaded.trials if t not in finished and t not in active]
    throttle = options.throttle or loaded.throttle
    on_slurm = options.backend == "slurm" or submitting.cluster() == "slurm"
    if to_run and on_slurm:
        check_array_limit(len(to_run), loaded)
    summary = (f"{len(loaded.trials)} trials: {len(finished)} finished, {len(active)} queued or running, "
               f"{len(to_run)} to run")
    if options.dry_run:
        print(f"would submit {summary}, at most {throttle} at once ({options.backend})")
        for trial in to_run:
            print(f"  {trial.name} {describe(trial)}: {jobspec.JobSpec.shell(spec, ['mnist-hpc', *sweep.train_args(trial)])}")
        if to_run and options.backend == "slurm":
            print(sweep.array_script(spec, loaded.out / "arrays" / "array-N.txt", len(to_run), throttle,
                                     loaded.out / "logs"), end="")
        return 0
    if not to_run:
        print(f"nothing to submit: {summary}")
        return 0
    sweep.write_configs(to_run)
    if not (loaded.out / "sweep.toml").exists():  # the sweep as first submitted, beside its trials
        write_text_atomic(loaded.out / "sweep.toml", loaded.path.read_text())
    os.environ.update(jobspec.launch_environment())
    jobs: list = []
    if options.backend == "slurm":
        record = submit_sbatch(loaded, to_run, spec, throttle)
    else:
        record, jobs = submit_submitit(loaded, to_run, spec, throttle, options.setup)
    add_record(loaded.out, record | {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print(f"submitted job array {record['job']} ({options.backend}): {summary}, at most {throttle} at once; "
          f"trials in {loaded.out}", flush=True)
    if jobs and options.wait:
        return wait_submitit(loaded, to_run, jobs, options.wait_timeout)
    return 0


# ------------------------------------------------------------------ status and report
def cmd_status(loaded: sweep.Sweep, options: argparse.Namespace) -> int:
    records = read_records(loaded.out)
    states, tasks = job_states(records), newest_tasks(records)
    counts: dict[str, int] = {}
    for trial in loaded.trials:
        state = trial_state(trial, states, tasks)
        label = state.split(" (")[0]
        counts[label] = counts.get(label, 0) + 1
        result = sweep.metrics(trial) or {}
        accuracy = f", test accuracy {result['test_accuracy']:.4f}" if result.get("test_accuracy") is not None else ""
        print(f"{trial.name} {describe(trial)}: {state}{accuracy}")
    print(f"{len(loaded.trials)} trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return 0


def cmd_report(loaded: sweep.Sweep, options: argparse.Namespace) -> int:
    if not loaded.out.is_dir():
        raise sweep.SweepError(f"{loaded.path}: out: {loaded.out} does not exist: nothing submitted yet "
                               "(launchers/sweep.py submit first, or give its --out)")
    records = read_records(loaded.out)
    states, tasks = job_states(records), newest_tasks(records)
    table = sweep.rows(loaded, {t.name: trial_state(t, states, tasks) for t in loaded.trials})
    written = sweep.write_report(loaded, table)
    print(written["md"].read_text(), end="")
    print(f"report: {written['csv']}, {written['md']}, {written['png']}")
    return 0


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="sweep.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True, parser_class=cli.Parser)
    for name, func, text in (("submit", cmd_submit, "submit the trials that are not finished, queued or running"),
                             ("status", cmd_status, "each trial's state (and the log of a failed one)"),
                             ("report", cmd_report, "OUT/report.csv, .md and .png; names the best trial")):
        action = sub.add_parser(name, help=text)
        action.add_argument("sweep_file", type=Path, metavar="SWEEP.toml", help="the sweep file (mnist_hpc/sweep.py)")
        action.add_argument("--out", type=Path, help="the sweep's folder (default: the file's out)")
        action.set_defaults(func=func)
        if name == "submit":
            action.add_argument("--backend", choices=("slurm", "submitit"), default="slurm",
                                help="slurm: one sbatch job array; submitit: map_array (SLURM, or local processes "
                                     "without srun)")
            action.add_argument("--throttle", type=cli.positive_int,
                                help="at most this many trials at once (default: the file's throttle, else all)")
            action.add_argument("--setup", action="append", default=[],
                                help="submitit: shell line run before each task (module load ...)")
            action.add_argument("--wait", action="store_true", help="submitit: wait and print each trial's result")
            action.add_argument("--wait-timeout", type=cli.positive_int, default=3600,
                                help="submitit: seconds; then the unfinished trials are cancelled (default: %(default)s)")
            action.add_argument("--dry-run", action="store_true", help="validate and print the plan; submit nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        loaded = sweep.load(options.sweep_file, options.out)
        return options.func(loaded, options)
    except (sweep.SweepError, jobspec.JobSpecError, *cli.INPUT_ERRORS) as err:
        cli.print_error(err)
        return 2
    except (OSError, RuntimeError) as err:
        cli.print_error(cli.os_error_line(err) if isinstance(err, OSError) else err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
