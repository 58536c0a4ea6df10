"""``mnist-hpc``: parse and validate arguments, then hand over to the module that does the work.

Every check that can fail on user input runs here, before Horovod/MPI is initialised, and fails
with one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from . import checkpoint, data, distributed, export, jobspec, models, options, quiet, rundir, runconfig, site, stack, stop
from .config import (BENCH_SETTINGS, PRECISIONS, BenchConfig, TrainConfig, backward_passes, batch_size,  # noqa: F401
                     epoch_fraction, recipe_names, shift_pixels)
# the value types every command and launcher uses, defined with the settings' schema
from .options import (MAX_COUNT, MAX_REAL, accuracy, bounded, learning_rate, non_negative_float,  # noqa: F401
                      non_negative_int, positive_float, positive_int)
from .exitcode import ExitCode


class UsageError(Exception):
    """Bad user input; reported as one line and exit status 2 (ExitCode.USAGE)."""


class RunFailure(Exception):
    """A command that could not do its work (no mirror served the data, ...); one line and exit
    status 1 (ExitCode.FAILED)."""


# what a command and every launcher report as one line with exit status 2: bad input, a checkpoint
# or model file that cannot be used, a stack that cannot run (Keras 3)
INPUT_ERRORS = (UsageError, checkpoint.CheckpointError, stack.StackError, runconfig.RunConfigError,
                options.ConfigFileError)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an argument the chosen subcommand does not take (``bench peak
        --batch-size 64``) is refused by that subcommand, naming the options it does take."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            leaf = chosen_parser(self, namespace)
            allowed = [action.option_strings[-1] for action in leaf._actions
                       if action.option_strings and action.help is not argparse.SUPPRESS
                       and not isinstance(action, argparse._HelpAction)]
            leaf.error(f"unrecognized arguments: {' '.join(extras)} (allowed: {', '.join(allowed) or 'none'})")
        return namespace


def chosen_parser(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)parser ``namespace`` was parsed by: ``mnist-hpc bench peak`` for bench peak."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(namespace, action.dest, None) in action.choices:
            return chosen_parser(action.choices[getattr(namespace, action.dest)], namespace)
    return parser


def check_accumulation(args: TrainConfig) -> None:
    """K accumulated batches must fit in the training images; --eval-every only with a target."""
    passes = args.backward_passes_per_step
    batch = args.resolved_recipe().batch_size
    if passes * batch > data.TRAIN_SIZE:
        raise UsageError(f"--backward-passes-per-step: {passes} x batch {batch} = {passes * batch} images per update "
                         f"is more than the {data.TRAIN_SIZE} training images (allowed: K x --batch-size up to "
                         f"{data.TRAIN_SIZE})")
    if args.eval_every is not None and args.target_accuracy is None:
        raise UsageError(f"--eval-every: {args.eval_every:g} needs --target-accuracy (it is how often the test set "
                         "is evaluated on the way to the target)")


# ------------------------------------------------------------------ checks needing the file system
def check_writable_dir(path: Path, option: str) -> None:
    """``path`` exists as a writable folder or can be created (its nearest existing parent is writable)."""
    probe = path.absolute()
    try:
        while not probe.exists():
            probe = probe.parent
    except PermissionError:
        raise UsageError(f"{option}: {path} is not writable (no access to {probe})") from None
    if not probe.is_dir():
        raise UsageError(f"{option}: {path} is not a directory ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        reason = f"read-only file system at {probe}" if read_only else f"no write permission on {probe}"
        raise UsageError(f"{option}: {path} is not writable ({reason})")


def check_data(data_dir: str | None) -> None:
    """Every file the ranks will read is there, complete and uncorrupted (its SHA-256; 0.2 s), so
    a bad file is one line here, before Horovod starts, instead of a traceback on every rank."""
    try:
        data.verify(data_dir)
    except data.DataError as err:
        raise UsageError(f"--data-dir: {err}") from None


def check_resume(config: TrainConfig) -> None:
    """The run directory and the checkpoint ``--resume`` picks can be used with these settings: the
    same run, or a new one in a directory that holds none (runconfig.py states the rule)."""
    run_dir = Path(config.out)
    try:
        if config.resume == "never" and runconfig.holds_a_run(run_dir):
            raise UsageError(f"--out: {run_dir} already holds a run, which --resume never would mix with a new "
                             "one: omit --out for a new run directory, or choose another --out")
        found = checkpoint.resolve(config.resume, run_dir / "checkpoints", config.model, arrays=config.resume != "auto")
        if found:
            runconfig.check_resumable(found.meta, config, str(run_dir) if config.resume == "auto" else str(found.path))
    except (checkpoint.CheckpointError, runconfig.RunConfigError) as err:
        raise UsageError(str(err)) from None


# ------------------------------------------------------------------ subcommands
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """``train``'s options: one per TrainConfig field (config.py holds each one's help, type and choices)."""
    options.add_config_option(p)
    options.add_options(p, TrainConfig)
    p.add_argument("--dry-run", action="store_true", help="validate the arguments and print the run; do not train")


def add_horovod_arguments(p: argparse.ArgumentParser) -> None:
    """Threads and Horovod's knobs, shared by 'train' and 'bench throughput'."""
    p.add_argument("--fp16-allreduce", action="store_true", help="compress gradients to fp16 for the all-reduce")
    add_threads_argument(p)
    p.add_argument("--fusion-threshold-mb", type=non_negative_float,
                   help="HOROVOD_FUSION_THRESHOLD in MiB: tensors fused into one all-reduce (Horovod's default: 128)")
    p.add_argument("--cycle-time-ms", type=positive_float,
                   help="HOROVOD_CYCLE_TIME: milliseconds between all-reduce cycles (default: the model's)")
    p.add_argument("--timeline", help="write a Horovod timeline to this JSON file")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", dest="intra_op_threads", type=positive_int,
                   help="intra-op threads per rank (default: the CPUs the rank owns)")


def check_model_choices(config: TrainConfig) -> None:
    """--recipe and --precision against what the model's registry entry allows."""
    spec = models.spec(config.model)
    if config.recipe not in spec.recipes:
        raise UsageError(f"--recipe: {config.recipe} is not a recipe of model {spec.name} "
                         f"(allowed: {', '.join(spec.recipes)})")
    check_precision(config.precision, spec, ("auto",))
    check_accumulation(config)
    if config.dropout is not None and spec.dropout is None:
        with_dropout = [name for name, other in models.REGISTRY.items() if other.dropout is not None]
        raise UsageError(f"--dropout: model {spec.name} has no dropout layer (models with one: {', '.join(with_dropout)})")
    if config.adam_beta1 is not None and spec.recipes[config.recipe].optimizer != "adam":
        raise UsageError(f"--adam-beta1: recipe {config.recipe} of model {spec.name} trains with "
                         f"{spec.recipes[config.recipe].optimizer.upper()}, not Adam")


def check_precision(requested: str, spec: models.ModelSpec, also: tuple[str, ...] = ()) -> None:
    if requested not in (*also, *spec.precisions):
        users = [name for name, other in models.REGISTRY.items() if requested in other.precisions]
        raise UsageError(f"--precision: {requested} applies to {' and '.join(users) or 'no model'}; {spec.name} trains "
                         f"in {'/'.join(spec.precisions)} (allowed: {', '.join((*also, *spec.precisions))})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: TrainConfig's defaults, then the --config file, then the options typed."""
    from_file = options.load_toml(args.config, TrainConfig) if args.config else {}
    return options.build(TrainConfig, from_file, options.namespace_settings(args, TrainConfig))


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Validate the parsed ``train`` arguments against the file system; build the config."""
    stack.require_keras2()
    config = config_from_args(args)
    check_model_choices(config)
    check_data(config.data_dir)
    if config.out is None:  # kept in args: validating twice (launcher, then command) names one directory
        args.out = str(runconfig.default_out(config.model))
        config = replace(config, out=args.out)
    run_dir = Path(config.out)
    check_writable_dir(run_dir, "--out")
    if rundir.launcher_rank() == 0:  # the other ranks of this job would see rank 0's own lock
        try:
            rundir.check_free(run_dir)
        except rundir.RunDirInUse as err:
            raise UsageError(str(err)) from None
    check_resume(config)
    return config


def validate_train(argv: Sequence[str]) -> TrainConfig:
    """Parse and validate ``mnist-hpc train ARGV`` (raises UsageError), for launchers."""
    return train_config(build_parser().parse_args(["train", *argv]))


def cmd_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    if args.dry_run:
        print(f"would train: {config}\nwith recipe: {config.resolved_recipe()}")
        return ExitCode.OK
    stop_request = stop.StopRequest()  # before TensorFlow's seconds of import: a TERM/USR1 then is not lost
    os.umask(rundir.PRIVATE_UMASK)  # nothing a rank writes is open to other users
    if rundir.launcher_rank() == 0:
        try:
            rundir.claim(Path(config.out))
        except rundir.RunDirInUse as err:
            raise UsageError(str(err)) from None
        # the run's settings beside it: what a resume must repeat, and --config repeats the run
        rundir.write_text_atomic(Path(config.out) / runconfig.CONFIG_FILE, runconfig.to_toml(config))
        print(f"run directory {Path(config.out).resolve()}", flush=True)
    from . import train

    return train.run(config, stop_request)


def evaluate_inputs(args: argparse.Namespace) -> Path:
    """Validate the parsed ``evaluate`` arguments: the model (a run directory's model.keras, a .keras
    file or a SavedModel export) and the data; return the model's path."""
    target = Path(args.target)
    model_path = target / "model.keras" if target.is_dir() and not export.is_export(target) else target
    if export.is_export(model_path):
        export.verify(model_path)
    elif model_path.is_file():
        checkpoint.verify_model_file(model_path)
    else:
        raise UsageError(f"evaluate: {args.target} is neither a run directory with model.keras, a .keras model file "
                         f"nor a SavedModel folder (RUN_DIR/{export.NAME})")
    check_data(args.data_dir)
    stack.require_keras2()
    return model_path


def bench_inputs(args: argparse.Namespace) -> None:
    if args.action == "report":
        return  # reads JSON files only: no TensorFlow
    stack.require_keras2()
    if args.action == "throughput":
        config = bench_config_from_args(args)
        check_model_choices(config.run)
        check_accumulation(config.run)
        if not config.synthetic:
            check_data(config.run.data_dir)


def validate(args: argparse.Namespace) -> None:
    """Everything a subcommand refuses before it starts: each cmd_* calls it first, and launchers
    call it once before mpirun/sbatch/submitit."""
    if args.command == "train":
        train_config(args)
    elif args.command == "evaluate":
        evaluate_inputs(args)
    elif args.command == "bench":
        bench_inputs(args)
    elif args.command == "doctor":
        stack.require_keras2()


def cmd_evaluate(args: argparse.Namespace) -> int:
    model_path = evaluate_inputs(args)
    from . import evaluate

    return evaluate.main(model_path, args.data_dir, as_json=args.json)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    """Input errors (an unusable --dir, a damaged file already there) are 2; no mirror serving a good
    copy is a runtime failure, 1: the same command may work later or from another network."""
    check_writable_dir(data.resolve_dir(args.dir), "--dir")
    try:
        path = data.fetch(args.dir, mirrors=args.mirror or data.MIRRORS)
    except data.FetchError as err:
        raise RunFailure(f"data fetch: {err}") from None
    except data.DataError as err:
        raise UsageError(f"--dir: {err}") from None
    print(f"MNIST OK in {path}")
    return ExitCode.OK


def cmd_data_verify(args: argparse.Namespace) -> int:
    """Missing or damaged files are bad input (2), as for train --data-dir."""
    try:
        path = data.verify(args.dir)
    except data.DataError as err:
        raise UsageError(f"--dir: {err}") from None
    print(f"MNIST OK in {path}")
    return ExitCode.OK


def bench_config_from_args(args: argparse.Namespace) -> BenchConfig:
    """What ``bench throughput`` times: train's defaults, a --config file's training settings, then the
    options typed (one schema: config.py)."""
    from_file = {f"run.{k}": v for k, v in options.load_toml(args.config, TrainConfig).items()} if args.config else {}
    return options.build(BenchConfig, from_file, options.namespace_settings(args, BenchConfig))


def measure_throughput(args: argparse.Namespace) -> dict:
    from . import bench

    try:
        return bench.throughput(bench_config_from_args(args))
    except ValueError as err:  # e.g. --compare-plain under a launcher
        raise UsageError(str(err)) from None


def measure_peak(args: argparse.Namespace) -> dict:
    from . import bench

    distributed.configure_threads(args.intra_op_threads or len(os.sched_getaffinity(0)), 2)
    return bench.matmul_peak()


def measure_allreduce(args: argparse.Namespace) -> dict:
    from . import bench

    return bench.allreduce_seconds()


def cmd_bench(args: argparse.Namespace) -> int:
    """bench throughput, peak and allreduce: rank 0 prints the result as JSON (and writes --out)."""
    bench_inputs(args)
    if args.dry_run:
        print(f"would run bench {args.action}")
        return ExitCode.OK
    result = args.measure(args)
    if rundir.launcher_rank() == 0:
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            rundir.write_json_atomic(Path(args.out), result)
    return ExitCode.OK


def cmd_bench_report(args: argparse.Namespace) -> int:
    if args.dry_run:
        print("would run bench report")
        return ExitCode.OK
    from . import bench

    try:
        print(bench.report(Path(args.results)).read_text(), end="")
    except ValueError as err:
        raise UsageError(str(err)) from None
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    validate(args)
    from . import doctor

    return doctor.main(args.json)


def cmd_slurm_render(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_options(jobspec.TEMPLATES[args.template].spec, args)
    except jobspec.JobSpecError as err:
        raise UsageError(str(err)) from None
    sys.stdout.write(jobspec.render_sbatch(args.template, spec))
    return ExitCode.OK


def spec_from_options(base: jobspec.JobSpec, options: argparse.Namespace, **changes) -> jobspec.JobSpec:
    """The one place resource options become a JobSpec: ``base`` (a template's) with ``changes``
    (args, python), then the --site profile's resources, then the options given on the command
    line (see :func:`add_resource_arguments`), which override the profile."""
    given = dict(name=options.job_name, nodes=options.nodes, ntasks_per_node=options.ntasks_per_node,
                 gpus_per_node=options.gpus_per_node, cpus_per_task=options.cpus_per_task, time=options.time,
                 partition=options.partition, account=options.account)
    spec = replace(base, **changes)
    return site.load(options.site).apply(spec, **given) if options.site else spec.with_resources(**given)


def add_resource_arguments(p: argparse.ArgumentParser) -> None:
    """SLURM resources, shared by 'slurm render' and the submitit launchers."""
    p.add_argument("--job-name", help="SLURM job name (default: the template's)")
    p.add_argument("--nodes", type=positive_int, help="number of nodes (default: the template's)")
    p.add_argument("--ntasks-per-node", type=positive_int, help="ranks per node; one per GPU on GPU nodes")
    p.add_argument("--gpus-per-node", type=non_negative_int, help="GPUs per node (default: none)")
    p.add_argument("--cpus-per-task", type=positive_int, help="CPUs per rank (default: the template's)")
    p.add_argument("--time", help="SLURM time limit: MINUTES, MINUTES:SECONDS, HH:MM:SS or D-HH[:MM[:SS]]")
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    p.add_argument("--account", help="SLURM account to charge (default: yours)")
    p.add_argument("--site", help="a site profile (TOML, e.g. slurm/sites/generic-pmix.toml): partition, launcher, "
                   "modules, GPUs, binding...; the options above override it")


def build_parser() -> Parser:
    parser = Parser(prog="mnist-hpc", description="Horovod-distributed Keras training of the TensorFlow MNIST "
                    "models (softmax and Deep MNIST CNN), locally, under MPI or under SLURM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a model (one process or every rank of an MPI/SLURM job)")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="aggregated test accuracy of a saved model")
    evaluate.add_argument("target", help=f"RUN_DIR (its model.keras), a .keras model file or a SavedModel folder "
                          f"(RUN_DIR/{export.NAME})")
    add_data_dir_argument(evaluate)
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object: path, accuracy, correct, count, loss, world_size")
    evaluate.set_defaults(func=cmd_evaluate)

    add_data_parsers(sub)
    add_bench_parsers(sub)

    doctor = sub.add_parser("doctor", help="this node's stack: Python, TensorFlow, Keras 2, Horovod, MPI")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    slurm = sub.add_parser("slurm", help="SLURM job scripts")
    actions = slurm.add_subparsers(dest="action", required=True, parser_class=Parser)
    render = actions.add_parser("render", help="print the sbatch script of a template (slurm/*.sbatch)")
    render.add_argument("template", choices=tuple(jobspec.TEMPLATES), help="the template: %(choices)s")
    add_resource_arguments(render)
    render.set_defaults(func=cmd_slurm_render)
    name_the_choices(actions)
    name_the_choices(sub)
    return parser


def name_the_choices(actions: argparse._SubParsersAction) -> None:
    """A missing subcommand is refused naming the choices ("required: {fetch,verify}"), not its dest."""
    actions.metavar = "{" + ",".join(actions.choices) + "}"


def add_data_dir_argument(p: argparse.ArgumentParser, option: str = "--data-dir") -> None:
    p.add_argument(option, help=f"MNIST folder (default: ${data.ENV_VAR} or {data.DEFAULT_DIR})")


def add_data_parsers(sub) -> None:
    """mnist-hpc data fetch | verify."""
    data_cmd = sub.add_parser("data", help="fetch or verify the MNIST files")
    actions = data_cmd.add_subparsers(dest="action", required=True, parser_class=Parser)
    fetch = actions.add_parser("fetch", help="download the missing files, trying each mirror in turn (checked, atomic)")
    add_data_dir_argument(fetch, "--dir")
    fetch.add_argument("--mirror", action="append", help="base URL to fetch from, instead of the built-in "
                       "mirrors (repeatable: tried in order)")
    fetch.set_defaults(func=cmd_data_fetch)
    verify = actions.add_parser("verify", help="check every file against the SHA-256 of its original content")
    add_data_dir_argument(verify, "--dir")
    verify.set_defaults(func=cmd_data_verify)
    name_the_choices(actions)


def add_bench_parsers(sub) -> None:
    """mnist-hpc bench throughput | peak | allreduce | report DIR | tta | project, each with only the options it uses."""
    bench = sub.add_parser("bench", help="throughput, matmul peak, all-reduce time, sweep reports")
    actions = bench.add_subparsers(dest="action", required=True, parser_class=Parser)
    throughput = actions.add_parser("throughput", help="images/s of training's own model and input, all ranks")
    add_throughput_arguments(throughput)
    throughput.set_defaults(func=cmd_bench, measure=measure_throughput)
    peak = actions.add_parser("peak", help="fp32 matmul GFLOP/s of this process")
    add_threads_argument(peak)
    add_bench_output_arguments(peak)
    peak.set_defaults(func=cmd_bench, measure=measure_peak)
    allreduce = actions.add_parser("allreduce", help="time of one all-reduce of the CNN's gradients across the ranks")
    add_bench_output_arguments(allreduce)
    allreduce.set_defaults(func=cmd_bench, measure=measure_allreduce)
    report = actions.add_parser("report", help="CSV, JSON, Markdown and plots of a sweep's results")
    report.add_argument("results", help="the folder of a sweep's np*.json files")
    report.add_argument("--dry-run", action="store_true", help="validate the arguments; write nothing")
    report.set_defaults(func=cmd_bench_report)
    from . import tta  # its options use this module's value types

    study = actions.add_parser("tta", help="time-to-accuracy study: epochs, updates and images to a target accuracy "
                               "per global batch and seed, on local ranks (resumable)")
    tta.add_arguments(study)
    study.set_defaults(func=lambda args: tta.execute(args))
    from . import projection

    project = actions.add_parser("project", help="projected time to the target accuracy against GPU count (1-256) "
                                 "per network, from time-to-accuracy studies and a stated GPU")
    projection.add_arguments(project)
    project.set_defaults(func=lambda args: projection.execute(args))
    name_the_choices(actions)


def add_throughput_arguments(p: argparse.ArgumentParser) -> None:
    """The training to time (train's own options and defaults, config.BENCH_SETTINGS) and how to time it."""
    p.add_argument("--config", type=Path, metavar="FILE.toml",
                   help="the training to time, from a train config file (e.g. RUN_DIR/config.toml); options given "
                        "on the command line override it; its budget and paths are not used")
    options.add_options(p, BenchConfig, skip=tuple(f"run.{name}" for name, _ in options.settings_of(TrainConfig)
                                                   if name.split(".")[0] not in BENCH_SETTINGS))
    add_bench_output_arguments(p)


def add_bench_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--dry-run", action="store_true", help="validate the arguments; do not measure")


def one_line(message: str) -> str:
    """``message`` as one printable line: control characters (from user values) shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


def print_error(message: object) -> None:
    """The one line every command and launcher prints for a refused input or a failed operation."""
    print(f"error: {one_line(str(message))}", file=sys.stderr)


def os_error_line(err: OSError) -> str:
    """``PATH: reason`` for a failed file operation (no permission, read-only, full disk, ...)."""
    where = err.filename if err.filename is not None else "file operation"
    return f"{where}: {err.strerror or err}"


TENSORFLOW_COMMANDS = ("train", "evaluate", "bench", "doctor")  # the commands that import TensorFlow


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner off unless asked for
    try:
        args = build_parser().parse_args(argv)
        if args.command in TENSORFLOW_COMMANDS:
            quiet.install()  # before TensorFlow is imported: its known-harmless C++ lines are dropped
        return args.func(args)
    except INPUT_ERRORS as err:
        print_error(err)
        return ExitCode.USAGE
    except RunFailure as err:
        print_error(err)
        return ExitCode.FAILED
    except OSError as err:  # creating, locking or writing the run directory, checkpoints, metrics, model
        print_error(os_error_line(err))
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
