"""Pre-train a detector's backbone on a classification source task.

    python tools/pretrain.py configs/tiny_faster_rcnn_synth.py
    python tools/pretrain.py resnet18 --data path/to/imagenet_style --epochs 90 --image-size 224
    python tools/pretrain.py CONFIG --work-dir work_dirs/pretrain_tiny --cfg-options model.backbone.widths=[16,32,64,128]

CONFIG_OR_BACKBONE is a detector config (its model.backbone is trained) or a torchvision
ResNet name. Without --data the synthetic classification task is generated in
data/synthetic/cls on first use. The checkpoint (<work-dir>/backbone.pth) holds the
backbone's weights under the backbone's own keys: use it with
init_cfg=dict(type='Pretrained', checkpoint=...) or
tools/compare_transfer.py --checkpoint ... (torchvision://resnet50 loads the same way).
"""

from __future__ import annotations

import argparse
import sys

from nasdet.cli import add_config_options, run_tool
from nasdet.train.pretrain import DEFAULT_EPOCHS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        metavar="CONFIG_OR_BACKBONE",
        help="detector config, or torchvision ResNet name (resnet18, ...)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="ImageNet-style folder with train/ and val/ (default: the "
        "synthetic source task in data/synthetic/cls, generated on first use)",
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS}: the synthetic task's "
                        "recipe, val top-1 0.88; 6 epochs reach only 0.23)")
    add_config_options(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate (cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="random-resized-crop side; default: the images' own size",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    args = parser.parse_args(argv)

    from nasdet.train.pretrain import pretrain
    from nasdet.transfer import check_backbone_checkpoint
    from nasdet.utils.config import detector_cfg

    source = args.source
    cfg = None
    if source.endswith((".py", ".yaml", ".yml", ".json")):
        from nasdet.train import load_config

        cfg = load_config(source, cfg_options=args.cfg_options)
        source = cfg
    elif args.cfg_options:
        parser.error("--cfg-options needs a config as CONFIG_OR_BACKBONE")
    work_dir = args.work_dir or "work_dirs/pretrain"
    result = pretrain(
        source,
        data=args.data,
        epochs=args.epochs,
        work_dir=work_dir,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        image_size=args.image_size,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
    )
    print(
        f"val top-1 after {args.epochs} epochs: {result.val_top1:.4f} (fraction of val images, "
        f"{len(result.classes)} classes); {result.train_seconds:.1f} s"
    )
    print(f"checkpoint: {result.checkpoint}")
    if cfg is not None:
        report = check_backbone_checkpoint(detector_cfg(cfg.model)["backbone"], result.checkpoint)
        print(
            f"loads into {cfg.filename}'s backbone with {len(report.missing_keys)} missing "
            f"and {len(report.unexpected_keys)} unexpected keys"
        )
    print(
        "use it: backbone.init_cfg=dict(type='Pretrained', checkpoint='"
        f"{result.checkpoint}'), or tools/compare_transfer.py --checkpoint {result.checkpoint}"
    )
    return 0


def run() -> None:
    """The ``nasdet-pretrain`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
