"""Eigenspectra and intrinsic dimensionality of a detector's layers, checkpoints side by side.

    python tools/analyze_spectrum.py CONFIG --layers backbone_stages fpn --num-images 64
    python tools/analyze_spectrum.py CONFIG init work_dirs/run/epoch_8.pth \\
        --layers backbone_stages fpn rpn_head --num-images 64 --labels "S (init)" "S (trained)"
    python tools/analyze_spectrum.py CONFIG pretrained.pth scratch.pth --layers 'neck\\.fpn_convs\\.\\d' \\
        --num-images 128 --labels "I (pretrained)" "S (scratch)" --out results/spectra

No CKPT (or the word ``init``) means the config's initialisation. Writes
``spectrum.json``, ``eigenspectra.png``, ``id_per_layer.png`` and ``id_per_width.png``
into ``--out`` (default ``<work_dir>/spectrum``) and prints a table per layer and
checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool

INIT = "init"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("config", help="config file")
    parser.add_argument(
        "checkpoints", nargs="*", metavar="CKPT",
        help=f"checkpoint files; '{INIT}' (or none at all) for the config's initialisation")
    parser.add_argument(
        "--layers", nargs="+", required=True, metavar="PRESET_OR_PATTERN",
        help="presets (backbone_stages, res_blocks, convs, fpn, rpn_head, roi_head, "
             "dense_head) or regular expressions matching whole module names")
    parser.add_argument("--num-images", type=int, required=True,
                        help="images to run, the first N of the split")
    parser.add_argument("--labels", nargs="+", help="one label per checkpoint, e.g. "
                        "'I (pretrained)' 'S (scratch)' (default: init / file name)")
    parser.add_argument("--out", help="output directory (default: <work_dir>/spectrum)")
    parser.add_argument("--split", choices=("val", "train", "test"), default="val",
                        help="dataset split (train: through the test pipeline, no flip)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward (>1 adds padding to the largest image)")
    parser.add_argument("--stride", type=int, default=1,
                        help="keep every S-th spatial position per dim")
    parser.add_argument("--max-positions", type=int, default=None,
                        help="keep at most P random positions per image and layer")
    lam = parser.add_mutually_exclusive_group()
    lam.add_argument("--rel-lambda", type=float, default=None,
                     help="lambda of N(lambda) relative to each layer's largest eigenvalue "
                          "(default 1e-3)")
    lam.add_argument("--lam", type=float, default=None,
                     help="absolute lambda of N(lambda) (squared activation units)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random initialisation and position subsets")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda "
                        "if available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(parser)
    args = parser.parse_args(argv)

    from pathlib import Path

    from nasdet.errors import NasdetError
    from nasdet.report.spectrum_report import format_spectrum_table, write_spectrum_report
    from nasdet.spectrum import DEFAULT_REL_LAMBDA
    from nasdet.spectrum.analysis import analyze_checkpoints
    from nasdet.train import load_config
    from nasdet.train.checks import check_output_dir
    from nasdet.utils.checkpoint import check_checkpoint_file

    checkpoints = [None if c == INIT else c for c in args.checkpoints] or [None]
    for ckpt in checkpoints:
        if ckpt is not None:
            check_checkpoint_file(ckpt, key="CKPT")
    if args.labels is not None and len(args.labels) != len(checkpoints):
        raise NasdetError(f"{len(args.labels)} labels for {len(checkpoints)} checkpoints "
                          "(no CKPT counts as one: the initialisation)", key="--labels")
    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    out = Path(args.out) if args.out else Path(cfg.work_dir) / "spectrum"
    check_output_dir(out, key="--out" if args.out else "--work-dir")
    result = analyze_checkpoints(
        cfg, checkpoints, layers=args.layers, num_images=args.num_images,
        batch_size=args.batch_size, split=args.split, stride=args.stride,
        max_positions=args.max_positions,
        rel_lambda=DEFAULT_REL_LAMBDA if args.rel_lambda is None else args.rel_lambda,
        lam=args.lam, labels=args.labels, seed=args.seed, device=args.device,
        progress=not args.no_progress)
    paths = write_spectrum_report(result, out)
    print(format_spectrum_table(result))
    print("written:")
    for path in paths.values():
        print(f"  {path}")
    return 0


def run() -> None:
    """The ``nasdet-analyze`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
