"""Propose backbone widths proportional to each stage's measured ID, within a MACs/params budget.

    python tools/analyze_spectrum.py CONFIG work_dirs/scratch/epoch_16.pth \\
        --layers backbone_stages --num-images 32 --out work_dirs/scratch/spectrum
    python tools/derive_widths.py CONFIG work_dirs/scratch/spectrum/spectrum.json \\
        --out work_dirs/derived.py                      # MACs <= the original's
    python tools/derive_widths.py CONFIG REPORT --metric params --budget 0.75 --divisor 16 --out D.py

REPORT is the spectrum report of a model trained with CONFIG (tools/analyze_spectrum.py's
spectrum.json, or the eigenspectrum_history.json of an EigenspectrumHook run; by
default the last checkpoint of the report). Widths are w_i = round(s * ID_i) (nearest
multiple of --divisor), with s the largest scale whose whole-detector cost stays within
--budget x the original's. The config written to --out is standalone:
tools/train.py retrains it.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("config", help="config of the analysed model")
    parser.add_argument("report", help="its spectrum report (spectrum.json or an "
                        "eigenspectrum history)")
    parser.add_argument("--out", required=True, help="derived config file to write")
    parser.add_argument("--metric", choices=("macs", "params"), default="macs",
                        help="the cost kept within the budget (default macs)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="allowed cost as a fraction of the original's (default 1.0)")
    parser.add_argument("--divisor", type=int, default=None,
                        help="widths are multiples of it (default: the backbone's divisor)")
    parser.add_argument("--max-width", type=int, default=None,
                        help="widest allowed stage (default: 4x the original's widest)")
    parser.add_argument("--label", help="checkpoint label in the report (default: the last)")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size at which MACs are counted (default: the config's "
                        "first test Resize scale, else 800 1333)")
    add_config_options(parser)
    args = parser.parse_args(argv)

    from pathlib import Path

    from nasdet.errors import NasdetError
    from nasdet.space.derive_widths import config_input_size, derive_config
    from nasdet.train import load_config
    from nasdet.utils.io import atomic_write_text

    out = Path(args.out)
    if out.suffix != ".py":
        raise NasdetError("the derived config is written as a Python config: use a .py file",
                          file=out, key="--out")
    if out.is_dir():
        raise NasdetError("is a directory: name the .py file to write", file=out, key="--out")
    from nasdet.train.checks import check_output_dir

    check_output_dir(out.parent, key="--out", what="folder of the derived config")
    cfg = load_config(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    size = tuple(args.input_size) if args.input_size else config_input_size(cfg)
    derived, p = derive_config(
        cfg, args.report, metric=args.metric, budget=args.budget, input_size=size,
        label=args.label, divisor=args.divisor, max_width=args.max_width)
    from nasdet.models.utils.macs import config_complexity

    before = config_complexity(cfg, size)
    after = config_complexity(derived, size)
    print(f"stage ID ({args.report}):")
    for name, value, old, new in zip(p.layers, p.ids, p.original, p.widths, strict=True):
        print(f"  {name:18s} ID {value:7.2f} / {old:4d} channels -> {new:4d}")
    print(f"scale: {p.scale:.3f} channels per ID dimension; budget: {args.metric} <= "
          f"{args.budget:g} x original ({p.evaluations} width sets costed"
          + ("; every stage at --max-width" if p.saturated else "") + ")")
    print(f"{'':10s}{'params [M]':>12s}{'MACs [G]':>12s}   (MACs at {size[0]}x{size[1]})")
    for name, c in (("original", before), ("derived", after)):
        print(f"{name:10s}{c.params / 1e6:>12.3f}{c.macs / 1e9:>12.3f}")
    print(f"{'ratio':10s}{after.params / before.params:>12.3f}{after.macs / before.macs:>12.3f}")
    atomic_write_text(out, derived.dump())
    print(f"written: {out} (tools/train.py {out} retrains it)")
    return 0


def run() -> None:
    """The ``nasdet-derive-widths`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
