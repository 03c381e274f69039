"""Build or extend a tabular detection-NAS benchmark of a search space, then report.

    python tools/proxy_benchmark.py search_spaces/tiny_synth_arch.yaml --num-archs 100 \
        --repeats 25 --budget 16 --out docs/benchmark/tiny_synth_arch --workers 2 \
        --cfg-options train_dataloader.dataset.indices=256

Each (architecture, seed) is trained to the budget with a validation and an ID
measurement after every epoch; its row lands in OUT/rows/ when it ends (OUT/table.csv
and table.json are rebuilt from them). `--rescore` then scores every registered proxy
(or `--proxies ...`) on each row's seeded initialisation, without training, so a proxy
added later joins the table for its few seconds per row. OUT/report/report.md: the
test-retest tau per epoch, the target epoch, every proxy's tau with paired intervals. Killed?
Run the same command again, on this machine or another one with OUT: finished rows
are kept, a job in flight resumes from its last epoch. More processes (or machines
sharing --work-dir) with the same command take other jobs.
"""

from __future__ import annotations

import argparse
import os
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", help="search space YAML")
    parser.add_argument("--out", help="benchmark directory (default: work_dirs/benchmark/SPACE)")
    parser.add_argument("--num-archs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=25,
                        help="architectures also trained with a second seed (test-retest)")
    parser.add_argument("--budget", type=int, default=16, help="training epochs per architecture")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the first runs")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture draws")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--max-jobs", type=int, help="stop each worker after this many jobs")
    parser.add_argument("--data-root", help="dataset root for every architecture")
    parser.add_argument("--rescore", action="store_true",
                        help="score the rows' missing proxies (no training)")
    parser.add_argument("--proxies", nargs="+", help="with --rescore: only these proxies")
    parser.add_argument("--no-report", action="store_true", help="only train, write no report")
    add_config_options(parser)
    args = parser.parse_args(argv)

    import multiprocessing as mp
    from pathlib import Path

    from nasdet.benchmark.build import BenchmarkPlan, worker_main, worker_process
    from nasdet.benchmark.proposals import read_proposals
    from nasdet.errors import NasdetError
    from nasdet.utils.resources import given_or_shipped

    for opt in ("num_archs", "budget", "workers", "threads"):
        if getattr(args, opt) < 1:
            raise NasdetError(f"must be >= 1, got {getattr(args, opt)}",
                              key="--" + opt.replace("_", "-"))
    if not 0 <= args.repeats <= args.num_archs:
        raise NasdetError(f"must be in 0..--num-archs, got {args.repeats}", key="--repeats")
    args.space = given_or_shipped(args.space, kind="search_spaces")
    if not Path(args.space).is_file():
        raise NasdetError("search space not found", file=args.space)
    out = args.out or str(Path("work_dirs/benchmark") / Path(args.space).stem)
    work_dir = args.work_dir or str(Path("work_dirs/benchmark_jobs") / Path(out).name)
    plan = BenchmarkPlan(
        space=args.space, num_archs=args.num_archs, repeats=args.repeats, epochs=args.budget,
        seed=args.seed, sample_seed=args.sample_seed,
        cfg_options=tuple(sorted((args.cfg_options or {}).items())), data_root=args.data_root)
    read_proposals(out)  # a bad proposals file: one line here, not one per worker
    job = {"plan": plan, "out": out, "work_dir": work_dir, "threads": args.threads,
           "max_jobs": args.max_jobs, "rescore": args.rescore, "proxies": args.proxies,
           "driver_pid": os.getpid()}
    print(f"[benchmark] {len(plan.jobs())} jobs ({args.num_archs} architectures, "
          f"{args.repeats} repeats, {args.budget} epochs) -> {out}; {args.workers} worker(s) "
          f"x {args.threads} thread(s)", flush=True)
    if args.workers == 1:
        code = worker_main(job)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker_process, args=(job,)) for _ in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        code = 0 if all(p.exitcode == 0 for p in procs) else -1
    if code < 0:
        return 2
    if not args.no_report:
        from nasdet.benchmark.analysis import report as write_report

        report = write_report(out)
        print(f"[benchmark] report: {report}")
    return 0


def run() -> None:
    """The ``nasdet-benchmark`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
