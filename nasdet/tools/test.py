"""Evaluate a trained checkpoint on the config's test split (COCO metrics).

    python tools/test.py configs/tiny_faster_rcnn_synth.py work_dirs/.../epoch_8.pth
    torchrun --nproc_per_node 2 tools/test.py CONFIG CHECKPOINT --launcher pytorch

Under torchrun each process evaluates its share of the images; rank 0 prints the metrics.
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
    parser.add_argument("checkpoint", help="checkpoint file")
    add_config_options(parser)
    add_launcher_options(parser)
    args = parser.parse_args(argv)
    apply_local_rank(args)
    from nasdet.utils.checkpoint import check_checkpoint_file

    check_checkpoint_file(args.checkpoint, key="CHECKPOINT")  # before any work dir is made

    from pathlib import Path

    from nasdet.train import evaluate, load_config
    from nasdet.train.launch import build_log, is_main_process, launched, main_process_stdout

    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    with launched(cfg, args.launcher, cfg_options=args.cfg_options):
        # The Runner's and pycocotools' output (hook table, COCO tables) goes to the work
        # dir's test.log: the terminal gets the metrics below, or an error's one line.
        with main_process_stdout(), build_log(cfg, "test.log"):
            metrics = evaluate(cfg, args.checkpoint)
        if is_main_process():
            print_metrics("test metrics", metrics)
            print(f"log: {Path(cfg.work_dir) / 'test.log'}")
    return 0


def run() -> None:
    """The ``nasdet-test`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
