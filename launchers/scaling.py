#!/usr/bin/env python3
"""Scaling sweep with submitit: the throughput benchmark at several node counts, then one report.

    python launchers/scaling.py --node-counts 1 2 --out runs/sweep -- --model cnn --synthetic

Arguments after ``--`` go to ``mnist-hpc bench throughput``. Resources come from the JobSpec of
slurm/bench.sbatch (the same as slurm/scaling_sweep.sh), with the node count varied.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import submitit

from mnist_hpc import bench, cli, jobspec


class Benchmark:
    """What each task runs: one rank of ``mnist-hpc bench throughput`` (srun --mpi=pmix)."""

    def __call__(self, spec: jobspec.JobSpec, result_file: str) -> dict | None:
        status = cli.main(list(spec.args))
        if status != 0:
            raise RuntimeError(f"rank {submitit.JobEnvironment().global_rank}: bench exited with status {status}")
        if submitit.JobEnvironment().global_rank != 0:
            return None
        return json.loads(Path(result_file).read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = cli.Parser(prog="scaling.py", description=__doc__.splitlines()[0])
    cli.add_resource_arguments(parser)
    parser.add_argument("--node-counts", type=cli.positive_int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path(f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}"))
    parser.add_argument("--setup", action="append", default=[], help="shell line run before each job")
    parser.add_argument("--wait-timeout", type=cli.positive_int, default=3600)
    parser.add_argument("--dry-run", action="store_true", help="validate and print the jobs; submit nothing")
    try:
        options = parser.parse_args(argv[:split])
        out = options.out.absolute()
        base = jobspec.TEMPLATES["bench"].spec
        specs = {}
        for nodes in options.node_counts:
            result_file = out / f"np{nodes * (options.ntasks_per_node or base.ntasks_per_node)}.json"
            spec = cli.spec_from_options(base, options, args=(*base.args, *argv[split + 1:], "--out", str(result_file)),
                                         python=sys.executable).with_resources(nodes=nodes)
            specs[nodes] = (spec, str(result_file))
            if cli.main([*specs[nodes][0].args, "--dry-run"]) != 0:
                return 2
    except (jobspec.JobSpecError, *cli.INPUT_ERRORS) as err:
        cli.print_error(err)
        return 2
    if options.dry_run:
        for nodes, (spec, _) in specs.items():
            print(f"{nodes} node(s): {spec.shell(spec.command())}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for nodes, (spec, result_file) in specs.items():
        executor = submitit.AutoExecutor(folder=out / "submitit" / "%j")
        executor.update_parameters(**spec.submitit_parameters(setup=options.setup))
        jobs.append((nodes, executor.submit(Benchmark(), spec, result_file)))
        print(f"submitted {nodes}-node benchmark: job {jobs[-1][1].job_id}", flush=True)
    failed = False
    names = {job.job_id: nodes for nodes, job in jobs}
    try:  # submitit yields each job as it ends, whatever the order
        for done, job in enumerate(submitit.helpers.as_completed([job for _, job in jobs], timeout=options.wait_timeout,
                                                                 poll_frequency=2), start=1):
            nodes = names[job.job_id]
            try:
                result = job.results()[0]
                print(f"[{done}/{len(jobs)}] {nodes} node(s): {result['images_per_second']:.0f} images/s", flush=True)
            except Exception as err:  # noqa: BLE001 - submitit re-raises the job's failure
                failed = True
                print(f"[{done}/{len(jobs)}] {nodes}-node job {job.job_id} failed: "
                      f"{str(err).strip().splitlines()[:1]}; logs: {job.paths.stderr}", file=sys.stderr)
    except TimeoutError:
        for nodes, job in jobs:
            if not job.done():
                job.cancel()
                print(f"{nodes}-node job {job.job_id}: cancelled after --wait-timeout", file=sys.stderr)
        return 1
    if failed:
        return 1
    print(bench.report(out).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
