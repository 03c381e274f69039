"""Search architectures and transfer strategies: the main job.

    python tools/search.py configs/search/tiny_synth.yaml
    python tools/search.py configs/search/tiny_synth.yaml --resume
    python tools/search.py CONFIG --storage postgresql://user@host/db --study-name s1
    python tools/search.py CONFIG --backend ray --address HEAD_IP:6379 --cpus-per-trial 4
    RAY_ADDRESS=HEAD_IP:6379 python tools/search.py CONFIG --backend ray
    python tools/search.py CONFIG --backend ray --workers-per-trial 2 --gpus-per-worker 1
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="search config YAML (configs/search/*.yaml)")
    add_config_options(parser)  # --work-dir, --cfg-options (applied to every candidate)
    parser.add_argument("--data-root", help="dataset root for every candidate")
    parser.add_argument("--backend", choices=("optuna", "ray"), default="optuna")
    parser.add_argument("--n-trials", type=int, help="override the config's n_trials")
    parser.add_argument("--storage", help="Optuna storage URL, both backends (default: "
                        "sqlite:///WORK_DIR/study.db)")
    parser.add_argument("--study-name", help="default: the config's file stem")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search")
    parser.add_argument("--address", help="Ray cluster to join (ray backend), e.g. "
                        "10.0.0.1:6379; default: RAY_ADDRESS if set, else a private Ray "
                        "on 127.0.0.1")
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--workers-per-trial", type=int, default=1, metavar="N",
                        help="ray backend: train each trial on N DDP workers (Ray Train; "
                        "gloo on CPUs, NCCL on GPUs; lr scaled as auto_scale_lr); default 1")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--placement", default="PACK",
                        choices=("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
                        help="how a trial's workers are placed on nodes (default PACK)")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--max-failures", type=int, metavar="K",
                        help="retry a trial cut off by a lost worker, node or driver up to "
                        "K times, from its last epoch (default: the config's max_failures, "
                        "else 2)")
    args = parser.parse_args(argv)

    from pathlib import Path

    from nasdet.search import run_search

    work_dir = args.work_dir or str(Path("work_dirs/search") / Path(args.config).stem)
    result = run_search(
        args.config, work_dir, backend=args.backend, n_trials=args.n_trials,
        storage=args.storage, study_name=args.study_name, resume=args.resume,
        address=args.address, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, keep_checkpoints=args.keep_checkpoints,
        data_root=args.data_root, cfg_options=args.cfg_options,
        max_failures=args.max_failures, workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        placement_strategy=args.placement)
    print(f"report: {result['report']} ({result['elapsed_s'] / 60:.1f} min)")
    return 0


def run() -> None:
    """The ``nasdet-search`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
