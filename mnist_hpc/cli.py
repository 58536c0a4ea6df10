"""``mnist-hpc``: parse and validate arguments, then hand over to the module that does the work.

Every check that can fail on user input runs here, before Horovod/MPI is initialised, and fails
with one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from . import checkpoint, data, distributed, jobspec, models, rundir, stack, stop
from .config import MAX_SHIFT, PRECISIONS, TrainConfig
from .distributed import HorovodKnobs


class UsageError(Exception):
    """Bad user input; reported as one line and exit status 2."""


# what a command and every launcher report as one line with exit status 2: bad input, a checkpoint
# or model file that cannot be used, a stack that cannot run (Keras 3)
INPUT_ERRORS = (UsageError, checkpoint.CheckpointError, stack.StackError)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------------ value types
# The largest count any option takes: TensorFlow seeds and step counters are 32/64-bit integers,
# and nothing in a training run needs more (2**31 - 1 epochs of MNIST is 4,000 years on a GPU).
MAX_COUNT = 2**31 - 1
MAX_REAL = 1e12  # the largest rate, threshold or duration an option takes; beyond it is a typo


def bounded(kind: Callable[[str], float], minimum: float, inclusive: bool, what: str,
            maximum: float | None = None):
    """An argparse type: a finite number of ``kind`` in [minimum, maximum] (or (minimum, maximum])."""
    maximum = (MAX_COUNT if kind is int else MAX_REAL) if maximum is None else maximum

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive) or value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what
    return parse


positive_int = bounded(int, 1, True, f"a positive integer up to {MAX_COUNT}")
non_negative_int = bounded(int, 0, True, f"a non-negative integer up to {MAX_COUNT}")
positive_float = bounded(float, 0.0, False, f"a positive finite number up to {MAX_REAL:g}")
non_negative_float = bounded(float, 0.0, True, f"a non-negative finite number up to {MAX_REAL:g}")
# a learning rate is a float32 in TensorFlow; an absurd but representable one is allowed (and caught
# by the divergence guard if it makes the loss non-finite)
learning_rate = bounded(float, 0.0, False, "a positive finite number up to 3.4e38 (float32)", maximum=3.4e38)
batch_size = bounded(int, 1, True, f"a batch size from 1 to {data.TRAIN_SIZE} (the training images)",
                     maximum=data.TRAIN_SIZE)


def shift_pixels(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_SHIFT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shift in pixels from 0 to {MAX_SHIFT}")
    return value


def accuracy(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy in (0, 1]")
    return value


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


def check_resume(resume: str, run_dir: Path, model: str) -> None:
    try:
        checkpoint.resolve(resume, run_dir / "checkpoints", model, arrays=resume != "auto")
    except checkpoint.CheckpointError as err:
        raise UsageError(str(err)) from None


# ------------------------------------------------------------------ subcommands
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=models.names(), default="simple")
    p.add_argument("--recipe", choices=recipe_names(), default="default",
                   help="default: tuned for time to accuracy; seed: the TensorFlow tutorial")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int, help="passes over the 55,000 training images")
    budget.add_argument("--steps", type=positive_int,
                        help="optimizer steps at world size 1; N ranks run ceil(steps / N) each")
    p.add_argument("--batch-size", type=batch_size,
                   help="per-rank batch size (recipe's default); more than a rank's shard is lowered to it")
    p.add_argument("--lr", type=learning_rate, help="base learning rate, scaled by world size")
    p.add_argument("--out", default="runs/latest", help="run directory (default: %(default)s)")
    p.add_argument("--resume", default="auto", help="auto (newest valid checkpoint), never, or a path")
    p.add_argument("--data-dir", help=f"MNIST folder (default: ${data.ENV_VAR} or {data.DEFAULT_DIR})")
    p.add_argument("--seed", type=non_negative_int, default=42)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 where the CPU/GPU supports it, fp16 on older GPUs, else fp32")
    p.add_argument("--no-scale-lr", dest="scale_lr", action="store_false",
                   help="do not multiply the learning rate by the world size")
    p.add_argument("--warmup-epochs", type=non_negative_float,
                   help="linear LR warm-up to the scaled rate (recipe's default)")
    p.add_argument("--init", choices=models.INITS, help="CNN weight initialisation (recipe's default)")
    p.add_argument("--augment", type=shift_pixels,
                   help="shift training images by up to this many pixels, 0 for none (recipe's default)")
    p.add_argument("--fp16-allreduce", action="store_true", help="compress gradients to fp16 for the all-reduce")
    p.add_argument("--keep-checkpoints", type=positive_int, default=3)
    p.add_argument("--threads", dest="intra_op_threads", type=positive_int,
                   help="intra-op threads per rank (default: the CPUs the rank owns)")
    p.add_argument("--fusion-threshold-mb", type=non_negative_float, help="HOROVOD_FUSION_THRESHOLD in MiB")
    p.add_argument("--cycle-time-ms", type=positive_float, help="HOROVOD_CYCLE_TIME")
    p.add_argument("--timeline", help="write a Horovod timeline to this JSON file")
    p.add_argument("--target-accuracy", type=accuracy,
                   help="time-to-accuracy benchmark: evaluate the test set each epoch, stop at this accuracy")
    p.add_argument("--dry-run", action="store_true", help="validate the arguments and print the run; do not train")


def recipe_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for spec in models.REGISTRY.values() for name in spec.recipes))


def check_model_choices(args: argparse.Namespace) -> None:
    """--recipe and --precision against what the model's registry entry allows."""
    spec = models.spec(args.model)
    if args.recipe not in spec.recipes:
        raise UsageError(f"--recipe: {args.recipe} is not a recipe of model {spec.name} "
                         f"(allowed: {', '.join(spec.recipes)})")
    check_precision(args.precision, spec, ("auto",))


def check_precision(requested: str, spec: models.ModelSpec, also: tuple[str, ...] = ()) -> None:
    if requested not in (*also, *spec.precisions):
        users = [name for name, other in models.REGISTRY.items() if requested in other.precisions]
        raise UsageError(f"--precision: {requested} applies to {' and '.join(users) or 'no model'}; {spec.name} trains "
                         f"in {'/'.join(spec.precisions)} (allowed: {', '.join((*also, *spec.precisions))})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Each option to its config field, by name here (a renamed field fails tests/unit/test_cli.py)."""
    return TrainConfig(
        model=args.model, recipe=args.recipe, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, out=args.out, resume=args.resume, data_dir=args.data_dir, seed=args.seed,
        precision=args.precision, scale_lr=args.scale_lr, warmup_epochs=args.warmup_epochs, augment=args.augment,
        init=args.init, fp16_allreduce=args.fp16_allreduce, keep_checkpoints=args.keep_checkpoints,
        intra_op_threads=args.intra_op_threads,
        knobs=HorovodKnobs(args.fusion_threshold_mb, args.cycle_time_ms, args.timeline),
        target_accuracy=args.target_accuracy)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Validate the parsed ``train`` arguments against the file system; build the config."""
    stack.require_keras2()
    check_model_choices(args)
    check_data(args.data_dir)
    run_dir = Path(args.out)
    check_writable_dir(run_dir, "--out")
    if rundir.launcher_rank() == 0:  # the other ranks of this job would see rank 0's own lock
        try:
            rundir.check_free(run_dir)
        except rundir.RunDirInUse as err:
            raise UsageError(str(err)) from None
    check_resume(args.resume, run_dir, args.model)
    return config_from_args(args)


def validate_train(argv: Sequence[str]) -> TrainConfig:
    """Parse and validate ``mnist-hpc train ARGV`` (raises UsageError), for launchers."""
    return train_config(build_parser().parse_args(["train", *argv]))


def cmd_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    if args.dry_run:
        print(f"would train: {config}\nwith recipe: {config.resolved_recipe()}")
        return 0
    stop_request = stop.StopRequest()  # before TensorFlow's seconds of import: a TERM/USR1 then is not lost
    os.umask(rundir.PRIVATE_UMASK)  # nothing a rank writes is open to other users
    if rundir.launcher_rank() == 0:
        try:
            rundir.claim(Path(config.out))
        except rundir.RunDirInUse as err:
            raise UsageError(str(err)) from None
    from . import train

    return train.run(config, stop_request)


def evaluate_inputs(args: argparse.Namespace) -> Path:
    """Validate the parsed ``evaluate`` arguments: the model file and the data; return the model path."""
    target = Path(args.target)
    model_path = target / "model.keras" if target.is_dir() else target
    if not model_path.is_file():
        raise UsageError(f"evaluate: {args.target} is neither a run directory with model.keras nor a model file")
    checkpoint.verify_model_file(model_path)
    check_data(args.data_dir)
    stack.require_keras2()
    return model_path


def bench_inputs(args: argparse.Namespace) -> None:
    if args.action == "report":
        return  # reads JSON files only: no TensorFlow
    stack.require_keras2()
    if args.action == "throughput":
        check_precision(args.precision, models.spec(args.model))
        if not args.synthetic:
            check_data(args.data_dir)


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

    return evaluate.main(model_path, args.data_dir)


def cmd_data(args: argparse.Namespace) -> int:
    try:
        if args.action == "fetch":
            path = data.fetch(args.dir, mirrors=args.mirror or data.MIRRORS)
        else:
            path = data.verify(args.dir)
    except data.DataError as err:
        print(f"mnist-hpc data {args.action}: {err}", file=sys.stderr)
        return 1
    print(f"MNIST OK in {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    bench_inputs(args)
    from . import bench

    if args.dry_run:
        print(f"would run bench {args.action}")
        return 0
    if args.action == "report":
        if not args.results:
            raise UsageError("bench report: give the folder of a sweep's np*.json results")
        try:
            print(bench.report(Path(args.results)).read_text(), end="")
        except ValueError as err:
            raise UsageError(str(err)) from None
        return 0
    if args.action == "peak":
        distributed.configure_threads(args.intra_op_threads or len(os.sched_getaffinity(0)), 2)
        result = bench.matmul_peak()
    elif args.action == "allreduce":
        result = bench.allreduce_seconds()
    else:
        config = bench.BenchConfig(args.model, args.batch_size, args.synthetic, args.warmup_steps, args.windows,
                                   args.window_steps, args.precision, args.compare_plain, args.data_dir,
                                   args.intra_op_threads, args.fp16_allreduce)
        try:
            result = bench.throughput(config, HorovodKnobs(args.fusion_threshold_mb, args.cycle_time_ms, args.timeline))
        except ValueError as err:  # e.g. --compare-plain under a launcher
            raise UsageError(str(err)) from None
    if rundir.launcher_rank() == 0:
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            rundir.write_json_atomic(Path(args.out), result)
    return 0


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
    return 0


def spec_from_options(base: jobspec.JobSpec, options: argparse.Namespace, **changes) -> jobspec.JobSpec:
    """The one place resource options become a JobSpec: ``base`` (a template's) with the options
    given on the command line (see :func:`add_resource_arguments`) and ``changes`` (args, python)."""
    return replace(base, **changes).with_resources(
        name=options.job_name, nodes=options.nodes, ntasks_per_node=options.ntasks_per_node,
        gpus_per_node=options.gpus_per_node, cpus_per_task=options.cpus_per_task, time=options.time,
        partition=options.partition, account=options.account)


def add_resource_arguments(p: argparse.ArgumentParser) -> None:
    """SLURM resources, shared by 'slurm render' and the submitit launchers."""
    p.add_argument("--job-name")
    p.add_argument("--nodes", type=positive_int)
    p.add_argument("--ntasks-per-node", type=positive_int, help="one per GPU on GPU nodes")
    p.add_argument("--gpus-per-node", type=non_negative_int)
    p.add_argument("--cpus-per-task", type=positive_int)
    p.add_argument("--time", help="SLURM time limit: MINUTES, MINUTES:SECONDS, HH:MM:SS or D-HH[:MM[:SS]]")
    p.add_argument("--partition")
    p.add_argument("--account")


def build_parser() -> Parser:
    parser = Parser(prog="mnist-hpc", description="Horovod-distributed Keras training of the TensorFlow MNIST "
                    "models (softmax and Deep MNIST CNN), locally, under MPI or under SLURM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a model (one process or every rank of an MPI/SLURM job)")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="aggregated test accuracy of a saved model")
    evaluate.add_argument("target", help="RUN_DIR (with model.keras) or a .keras model file")
    evaluate.add_argument("--data-dir")
    evaluate.set_defaults(func=cmd_evaluate)

    data_cmd = sub.add_parser("data", help="fetch or verify the MNIST files")
    data_cmd.add_argument("action", choices=("fetch", "verify"))
    data_cmd.add_argument("--dir", help=f"folder (default: ${data.ENV_VAR} or {data.DEFAULT_DIR})")
    data_cmd.add_argument("--mirror", action="append", help="base URL to fetch from (repeatable)")
    data_cmd.set_defaults(func=cmd_data)

    bench = sub.add_parser("bench", help="throughput, matmul peak, sweep reports")
    bench.add_argument("action", choices=("throughput", "peak", "allreduce", "report"),
                       help="allreduce: time of one all-reduce of the CNN's gradients across the ranks")
    bench.add_argument("results", nargs="?", help="report: the folder of a sweep's np*.json files")
    bench.add_argument("--model", choices=models.names(), default="cnn")
    bench.add_argument("--batch-size", type=positive_int, default=128, help="per rank (default: %(default)s)")
    bench.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    bench.add_argument("--warmup-steps", type=positive_int, default=10)
    bench.add_argument("--windows", type=positive_int, default=5)
    bench.add_argument("--window-steps", type=positive_int, default=20)
    bench.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    bench.add_argument("--compare-plain", action="store_true",
                       help="also time plain tf.keras (no Horovod) in the same process; reports the ratio")
    bench.add_argument("--threads", dest="intra_op_threads", type=positive_int)
    bench.add_argument("--fusion-threshold-mb", type=non_negative_float)
    bench.add_argument("--cycle-time-ms", type=positive_float, help="HOROVOD_CYCLE_TIME")
    bench.add_argument("--fp16-allreduce", action="store_true", help="compress gradients to fp16 for the all-reduce")
    bench.add_argument("--timeline", help="write a Horovod timeline to this JSON file")
    bench.add_argument("--data-dir")
    bench.add_argument("--out", help="write the result JSON here")
    bench.add_argument("--dry-run", action="store_true", help="validate the arguments; do not measure")
    bench.set_defaults(func=cmd_bench)

    doctor = sub.add_parser("doctor", help="this node's stack: Python, TensorFlow, Keras 2, Horovod, MPI")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    slurm = sub.add_parser("slurm", help="print the sbatch script of a template (slurm/*.sbatch)")
    slurm.add_argument("action", choices=("render",))
    slurm.add_argument("template", choices=tuple(jobspec.TEMPLATES))
    add_resource_arguments(slurm)
    slurm.set_defaults(func=cmd_slurm_render)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner off unless asked for
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except INPUT_ERRORS as err:
        print_error(err)
        return 2
    except OSError as err:  # creating, locking or writing the run directory, checkpoints, metrics, model
        print_error(os_error_line(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
