"""Train a detector from an MMDetection-style config.

    python tools/train.py configs/tiny_faster_rcnn_synth.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_epochs=2
    python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume path.pth   # a given checkpoint
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config file")
    add_config_options(parser)
    parser.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the latest in the work dir if none is given")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA)")
    args = parser.parse_args(argv)

    from nasdet.train import load_config, train

    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    metrics = train(cfg, resume=args.resume or False, amp=args.amp)
    if metrics:
        print("final validation metrics (COCO AP as fractions, pycocotools):")
        for key, value in metrics.items():
            print(f"  {key:28s} {value:.4f}")
    print(f"work dir: {cfg.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
