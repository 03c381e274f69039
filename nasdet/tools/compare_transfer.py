"""Train one base detector under several transfer strategies and compare AP.

    python tools/compare_transfer.py --base configs/tiny_faster_rcnn_synth.py \\
        scratch finetune freeze:k=2 feature_transfer l2sp reinit_top \\
        --checkpoint work_dirs/pretrain/backbone.pth
    python tools/compare_transfer.py --base CONFIG scratch:schedule_factor=1 finetune \\
        --pretrain-if-missing --epochs 4
    python tools/compare_transfer.py --base CONFIG configs/transfer/my_freeze.py ... --resume

STRATEGY is a built-in name (scratch, finetune, freeze, feature_transfer, l2sp,
reinit_top) with optional parameters NAME:key=value,key=value, or a fragment file
configs/transfer/*.py. Every run uses the same base and seed, in <work-dir>/<label>/.
results.csv / results.json (AP as fractions, pycocotools; seconds wall clock; parameter
counts) and ap_per_strategy.png are rewritten after each run; --resume skips finished
strategies.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool
from nasdet.train.pretrain import DEFAULT_EPOCHS


def _shipped_fragment(strategy: str) -> str:
    """``FILE.py[:k=v,...]`` with FILE a shipped fragment when it is not here."""
    from nasdet.utils.resources import PREFIX, given_or_shipped

    head = PREFIX if strategy.startswith(PREFIX) else ""
    name, sep, options = strategy[len(head):].partition(":")
    if not name.endswith(".py"):
        return strategy
    return given_or_shipped(head + name) + sep + options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, metavar="CONFIG", help="base detector config")
    parser.add_argument(
        "strategies",
        nargs="+",
        metavar="STRATEGY",
        help="NAME[:key=value,...] or configs/transfer/*.py",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="pretrained backbone (path or torchvision://...) for the strategies that need one",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs of the base (scratch scales it)"
    )
    add_config_options(parser)
    parser.add_argument(
        "--resume", action="store_true", help="skip strategies already in results.json"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of every run (default: the base config's)"
    )
    parser.add_argument(
        "--pretrain-if-missing",
        action="store_true",
        help="without --checkpoint, pre-train the base's backbone on the "
        "synthetic source task first (reused from <work-dir>/pretrain/)",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=DEFAULT_EPOCHS,
        help=f"epochs of that pre-training (default {DEFAULT_EPOCHS})",
    )
    args = parser.parse_args(argv)

    from nasdet.report.transfer_comparison import format_table
    from nasdet.study.transfer_comparison import compare_transfer

    rows = compare_transfer(
        args.base,
        [_shipped_fragment(s) for s in args.strategies],
        checkpoint=args.checkpoint,
        epochs=args.epochs,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        resume=args.resume,
        seed=args.seed,
        pretrain_if_missing=args.pretrain_if_missing,
        pretrain_options=dict(epochs=args.pretrain_epochs),
    )
    print(
        "COCO box AP on val (fractions, pycocotools); train s = wall clock; "
        "parameters = distinct scalars"
    )
    print(format_table(rows))
    if rows:
        from pathlib import Path

        out = Path(rows[0]["work_dir"]).parent
        print(
            f"table: {out / 'results.csv'}  {out / 'results.json'}; plot: "
            f"{out / 'ap_per_strategy.png'}"
        )
    return 0


def run() -> None:
    """The ``nasdet-compare-transfer`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
