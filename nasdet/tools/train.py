"""Train a detector from an MMDetection-style config.

    python tools/train.py configs/tiny_faster_rcnn_synth.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_epochs=2
    python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume path.pth   # a given checkpoint
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, print_metrics, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config file")
    add_config_options(parser)
    parser.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the latest in the work dir if none is given")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA)")
    args = parser.parse_args(argv)
    if args.resume not in (None, "auto"):  # before any work dir is made
        from nasdet.utils.checkpoint import check_checkpoint_file

        check_checkpoint_file(args.resume, key="--resume")

    from nasdet.train import build_runner, load_config, prepare_data
    from nasdet.train.runner import _read_metrics as read_metrics
    from nasdet.utils.output import output_to_folder_log

    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    prepare_data(cfg)  # a first run generates the synthetic data: its progress is shown
    # Building prints the environment, the config and the hook table (all in the work
    # dir's log file too): kept off the terminal, so an error is its one line.
    with output_to_folder_log(cfg.work_dir, "build.log"):
        runner = build_runner(cfg, resume=args.resume or False, amp=args.amp)
    runner.train()
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
