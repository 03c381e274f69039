"""How well do proxies predict trained AP? Sample, score, train, correlate.

    python tools/proxy_benchmark.py search_spaces/tiny_synth.yaml --num-archs 24 --budget 4
    python tools/proxy_benchmark.py SPACE --num-archs 24 --budget 4 --seed-repeats 2
    python tools/proxy_benchmark.py SPACE ... --backend ray      # trainings as Ray trials

Killed? Run the same command again: finished architectures are kept.

Writes <work-dir>/report/correlations.md (+ .json, scatter plots): Kendall tau and
Spearman rho of every proxy against COCO box AP and AP50 with bootstrap 95% intervals,
top-10% recall, proxy cost vs training cost, and the seed-to-seed AP noise of one
architecture next to the spread across architectures. More processes on the same
study train architectures in parallel (Optuna RDB workers; the first one's command
then retrains the seed-noise runs and writes the report):

    python tools/search.py WORK_DIR/benchmark_search.yaml --work-dir WORK_DIR \
        --study-name proxy_benchmark --resume   # the benchmark config keeps the overrides
"""

from __future__ import annotations

import argparse
import shlex
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", help="search space YAML")
    parser.add_argument("--num-archs", type=int, default=24)
    parser.add_argument("--budget", type=int, default=4, help="training epochs per architecture")
    parser.add_argument("--proxies", nargs="+", help="proxy names (default: all)")
    parser.add_argument("--num-images", type=int, default=8, help="probe batch of the proxies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-repeats", type=int, default=2,
                        help="extra trainings of one architecture to measure seed noise")
    parser.add_argument("--backend", choices=("optuna", "ray"), default="optuna")
    parser.add_argument("--data-root", help="dataset root for every architecture")
    add_config_options(parser)
    args = parser.parse_args(argv)

    from pathlib import Path

    from nasdet.search.proxy_benchmark import run_proxy_benchmark

    work_dir = args.work_dir or str(Path("work_dirs/proxy_benchmark") / Path(args.space).stem)
    command = shlex.join(["python", "tools/proxy_benchmark.py", *(argv or sys.argv[1:])])
    report = run_proxy_benchmark(
        args.space, work_dir, num_archs=args.num_archs, epochs=args.budget,
        proxies=args.proxies, num_images=args.num_images, seed=args.seed,
        seed_repeats=args.seed_repeats, backend=args.backend, data_root=args.data_root,
        cfg_options=args.cfg_options, command=command)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
