"""Evaluate a trained checkpoint on the config's test split (COCO metrics).

    python tools/test.py configs/tiny_faster_rcnn_synth.py work_dirs/.../epoch_8.pth
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    add_config_options(parser)
    args = parser.parse_args(argv)

    from nasdet.train import evaluate, load_config

    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    metrics = evaluate(cfg, args.checkpoint)
    print("test metrics (COCO AP as fractions, pycocotools):")
    for key, value in metrics.items():
        print(f"  {key:28s} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
