"""Train a detector from an MMDetection-style config.

    python tools/train.py configs/tiny_faster_rcnn_synth.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_epochs=2
    python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume path.pth   # a given checkpoint
    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch   # DDP

With ``--launcher pytorch`` under torchrun every process trains on its share of the
images (distributed samplers, DDP; gloo without CUDA, nccl with it, unless
``--cfg-options env_cfg.dist_cfg.backend=...`` says otherwise); rank 0 alone generates
a missing synthetic dataset and writes the metrics, the dumped config and the terminal
lines. The batch size is per process.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import (
    add_config_options,
    add_launcher_options,
    apply_local_rank,
    print_metrics,
    run_tool,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config file")
    add_config_options(parser)
    parser.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the latest in the work dir if none is given")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA)")
    add_launcher_options(parser)
    args = parser.parse_args(argv)
    apply_local_rank(args)
    if args.resume not in (None, "auto"):  # before any work dir is made
        from nasdet.utils.checkpoint import check_checkpoint_file

        check_checkpoint_file(args.resume, key="--resume")

    from nasdet.train import build_runner, load_config
    from nasdet.train.launch import (
        build_log,
        is_main_process,
        launched,
        main_process_stdout,
        prepare_data_once,
    )
    from nasdet.train.runner import read_metrics

    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    with launched(cfg, args.launcher, cfg_options=args.cfg_options):
        with main_process_stdout():
            prepare_data_once(cfg)  # a first run generates the synthetic data: progress shown
            # Building prints the environment, the config and the hook table (all in the
            # work dir's log file too): kept off the terminal, so an error is its one line.
            with build_log(cfg, "build.log"):
                runner = build_runner(cfg, resume=args.resume or False, amp=args.amp)
            runner.train()
        if is_main_process():
            metrics = read_metrics(cfg.work_dir, "val")
            if metrics:
                print_metrics("final validation metrics", metrics)
            print(f"work dir: {cfg.work_dir}")
    return 0


def run() -> None:
    """The ``nasdet-train`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
