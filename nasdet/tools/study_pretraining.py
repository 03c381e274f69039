"""The pre-training study: I vs S with eigenspectra and ID dynamics, then widths derived from ID.

    python tools/study_pretraining.py                      # the embedded default (2 CPU cores, ~22 min)
    python tools/study_pretraining.py --seeds 0 1 2 --report-dir docs/pretraining_study
    python tools/study_pretraining.py --i-config configs/study/faster_rcnn_r50_fpn_I.py \\
        --s-config configs/study/faster_rcnn_r50_fpn_S.py --backend ray --gpus-per-run 1 \\
        --address HEAD:6379 --num-images 64 --work-dir work_dirs/study_coco

Trains I (fine-tuned from a pre-trained backbone) and S (from scratch) with the
eigenspectrum hook on, measures the eigenspectra of the pre-trained backbone, of trained
I, and of S before and after training, derives backbone widths proportional to S's
stage ID within a MACs (or params) budget, retrains them from scratch (D), and writes
one report (<work-dir>/report/report.md, plus --report-dir). Re-running continues where
a killed study stopped. Without --checkpoint, a backbone this study pre-trained before
(<work-dir>/pretrain) is used, else the I config's checkpoint, else one is pre-trained on
the synthetic source task into <work-dir>/pretrain. A study never mixes source backbones:
resuming with another checkpoint than its finished I runs used is refused.
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import run_tool
from nasdet.train.pretrain import DEFAULT_EPOCHS

DEFAULT_I = "configs/study/tiny_faster_rcnn_I.py"
DEFAULT_S = "configs/study/tiny_faster_rcnn_S.py"
# The embedded default fits 2 CPU cores in about half an hour: the first 256 training
# images, warm-up over one epoch (16 iterations).
DEFAULT_OPTIONS = {"train_dataloader.dataset.indices": 256, "param_scheduler.0.end": 16}


def main(argv: list[str] | None = None) -> int:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--i-config", default=DEFAULT_I, help=f"I's config (default {DEFAULT_I})")
    parser.add_argument("--s-config", default=DEFAULT_S, help=f"S's config (default {DEFAULT_S})")
    parser.add_argument("--work-dir", default="work_dirs/pretraining_study")
    parser.add_argument("--report-dir", help="also write the report here, e.g. docs/...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="I's epochs (S and D: S's schedule_factor times as many); "
                        "default 8 with the default configs, else the configs' own")
    parser.add_argument("--checkpoint", help="I's pre-trained backbone (path or torchvision://)")
    parser.add_argument("--pretrain-epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"epochs of that pre-training (default {DEFAULT_EPOCHS})")
    parser.add_argument("--pretrain-data", help="ImageNet-style folder for that pre-training")
    parser.add_argument("--layers", nargs="+", default=["backbone_stages", "fpn"])
    parser.add_argument("--num-images", type=int, default=32,
                        help="validation images of every spectrum")
    parser.add_argument("--interval", type=int, default=1, help="epochs between ID measurements")
    parser.add_argument("--derive-metric", choices=("macs", "params"), default="macs")
    parser.add_argument("--derive-budget", type=float, default=1.0,
                        help="D's cost as a fraction of S's (default 1.0)")
    parser.add_argument("--no-derive", action="store_true", help="skip derived widths (D)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--address", help="Ray cluster head HOST:PORT (default: a private "
                        "local instance bound to 127.0.0.1)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0)
    parser.add_argument("--gpus-per-run", type=float, default=0.0)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                        help="overrides of both configs (default for the embedded configs: "
                        + " ".join(f"{k}={v}" for k, v in DEFAULT_OPTIONS.items()) + ")")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from nasdet.report.pretraining_study import headline_table
    from nasdet.study.pretraining import StudyOptions, run_pretraining_study
    from nasdet.utils.resources import given_or_shipped

    embedded = args.i_config == DEFAULT_I and args.s_config == DEFAULT_S
    opts = StudyOptions(
        i_config=given_or_shipped(args.i_config), s_config=given_or_shipped(args.s_config),
        work_dir=args.work_dir,
        seeds=tuple(args.seeds),
        epochs=args.epochs if args.epochs is not None else (8 if embedded else None),
        checkpoint=args.checkpoint, pretrain_epochs=args.pretrain_epochs,
        pretrain_data=args.pretrain_data, layers=tuple(args.layers),
        num_images=args.num_images, interval=args.interval,
        derive_metric=args.derive_metric, derive_budget=args.derive_budget,
        derive=not args.no_derive,
        cfg_options=dict(args.cfg_options if args.cfg_options is not None
                         else DEFAULT_OPTIONS if embedded else {}),
        backend=args.backend, address=args.address, cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run)
    summary = run_pretraining_study(opts, report_dir=args.report_dir,
                                    progress=not args.no_progress)
    print(headline_table(summary))
    print(f"report: {summary['options']['work_dir']}/report/report.md"
          + (f" and {args.report_dir}/report.md" if args.report_dir else "")
          + f" ({summary['seconds'] / 60:.1f} min)")
    return 0


def run() -> None:
    """The ``nasdet-study-pretraining`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
