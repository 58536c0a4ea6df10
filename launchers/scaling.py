#!/usr/bin/env python3
"""Scaling sweep with submitit: the throughput benchmark at several node counts, then one report.

    python launchers/scaling.py --node-counts 1 2 --out runs/sweep -- --model cnn --synthetic

Arguments after ``--`` go to ``mnist-hpc bench throughput``. Resources come from the JobSpec of
slurm/bench.sbatch (the same as slurm/scaling_sweep.sh), with ``--site FILE`` (a site profile,
slurm/sites/) and the other options applied, and the node count varied.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path


from mnist_hpc import bench, cli, jobspec, submitting
from mnist_hpc.exitcode import ExitCode


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="scaling.py", description=__doc__.splitlines()[0])
    cli.add_resource_arguments(parser)
    parser.add_argument("--node-counts", type=cli.positive_int, nargs="+", default=[1, 2],
                        help="one benchmark job per node count (default: 1 2)")
    parser.add_argument("--out", type=Path, default=Path(f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}"),
                        help="folder of the np*.json results and the report (default: runs/sweep-DATE-TIME)")
    parser.add_argument("--setup", action="append", default=[], help="shell line run before each job")
    parser.add_argument("--wait-timeout", type=cli.positive_int, default=3600,
                        help="seconds to wait for all jobs; the unfinished ones are then cancelled "
                        "(default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the jobs; submit nothing")
    return parser


def with_defaults(template: tuple[str, ...], given: list[str]) -> tuple[str, ...]:
    """The template's command (``bench throughput --model cnn``) with the options after ``--``: an option
    given there replaces the template's pair instead of following it."""
    command, defaults = template[:2], template[2:]
    pairs = [defaults[i:i + 2] for i in range(0, len(defaults), 2)]
    return (*command, *(arg for pair in pairs if pair[0] not in given for arg in pair), *given)


def main(argv: list[str] | None = None) -> int:
    own, bench_args = submitting.split_argv(sys.argv[1:] if argv is None else argv)
    try:
        options = build_parser().parse_args(own)
        out = options.out.absolute()
        base = jobspec.TEMPLATES["bench"].spec
        specs = {}
        for nodes in options.node_counts:
            spec = cli.spec_from_options(base, options, python=sys.executable).with_resources(nodes=nodes)
            result_file = out / f"np{spec.world_size}.json"  # world size after the site and the options
            spec = replace(spec, args=(*with_defaults(base.args, bench_args), "--out", str(result_file)))
            spec.submitit_parameters()  # a site profile submitit cannot use (launcher mpirun) fails here
            specs[nodes] = (spec, str(result_file))
            cli.validate(cli.build_parser().parse_args(list(spec.args)))  # the benchmark's own refusals, silently
    except (jobspec.JobSpecError, *cli.INPUT_ERRORS) as err:
        cli.print_error(err)
        return ExitCode.USAGE
    if options.dry_run:
        for nodes, (spec, _) in specs.items():
            print(f"{nodes} node(s): {spec.shell(spec.command())}")
        return ExitCode.OK
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for nodes, (spec, result_file) in specs.items():
        executor = submitting.make_executor(spec, out / "submitit", options.setup)
        jobs.append((nodes, executor.submit(submitting.Ranks(), spec, result_file)))
        print(f"submitted {nodes}-node benchmark: job {jobs[-1][1].job_id}", flush=True)
    failed = False
    names = {job.job_id: nodes for nodes, job in jobs}
    labels = {job.job_id: f"{nodes}-node job {job.job_id}" for nodes, job in jobs}
    try:  # each job as it ends, whatever the order; every state change said as it is seen
        for done, outcome in enumerate(submitting.outcomes([job for _, job in jobs], options.wait_timeout, labels),
                                       start=1):
            nodes = names[outcome.job.job_id]
            if outcome.error:
                failed = True
                print(f"[{done}/{len(jobs)}] {nodes}-node job {outcome.job.job_id} failed: {outcome.error}; "
                      f"logs: {outcome.log}", file=sys.stderr)
            else:
                print(f"[{done}/{len(jobs)}] {nodes} node(s): {outcome.result['images_per_second']:.0f} images/s",
                      flush=True)
    except submitting.WaitTimeout as err:
        print(err, file=sys.stderr)
        return ExitCode.FAILED
    if failed:
        return ExitCode.FAILED
    print(bench.report(out).read_text(), end="")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
