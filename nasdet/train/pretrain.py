"""Source-task pre-training: a backbone plus a linear classifier on an ImageNet-style folder.

The backbone is a detector config's ``model.backbone`` (e.g. the tiny detectors'
``FlexResNet``) or a torchvision ResNet by name (``resnet18``, ``resnet50``, ...). By
default it trains on nasdet's synthetic classification source task, generated under
``data/synthetic/cls`` on first use (:func:`nasdet.data.ensure_dataset`). The result is
a checkpoint ``{'state_dict': <backbone weights>, 'classifier': {...}, 'meta': {...}}``
whose ``state_dict`` keys are exactly the backbone's own (``conv1.weight``,
``layer1.0.bn1.running_mean``, ...), so a detector loads it through
``backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH)`` (no prefix) or the
``finetune``-family strategies of :mod:`nasdet.transfer`. torchvision's own
ResNet weights (``torchvision://resnet50``) go through the same path: mmengine's
loader fetches them, and their keys are the same.

Images are normalised as the detector's data preprocessor does (mean/std on the
0..255 scale, channel order included), so the pretrained features see what the
detector will feed them.

Example:
    >>> from nasdet.train.pretrain import pretrain
    >>> res = pretrain('configs/tiny_faster_rcnn_synth.py')  # doctest: +SKIP
    >>> res.checkpoint, res.val_top1  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.utils.io import atomic_write, atomic_write_json

#: Where the synthetic source task is generated when no ``data`` is given.
DEFAULT_DATA = Path("data/synthetic/cls")

#: mmdet's ImageNet normalisation (RGB, 0..255 scale).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

CHECKPOINT_FORMAT = "nasdet-pretrain-1"

#: Epochs of the default source-task recipe. On the synthetic task the tiny backbone
#: stays near chance for its first ~8 epochs, then takes off: measured val top-1 0.88
#: after 24 epochs, 0.23 after 6 and 0.12 after 4 (12 classes, chance 0.083).
DEFAULT_EPOCHS = 24


@dataclass
class PretrainResult:
    """What :func:`pretrain` produced.

    Args:
        checkpoint: The written backbone checkpoint.
        val_top1: Top-1 accuracy on the val split after the last epoch (fraction).
        history: Per epoch: ``epoch``, ``train_loss`` (mean cross-entropy, nats),
            ``train_top1`` and ``val_top1`` (fractions), ``seconds`` (wall clock).
        classes: Class names, in label order.
        train_seconds: Wall-clock seconds of the whole run.
    """

    checkpoint: Path
    val_top1: float
    history: list[dict[str, float]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    train_seconds: float = 0.0


class TorchvisionResNetTrunk(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``: returns ``(layer4 output,)``.

    Its parameter names are torchvision's (``conv1``, ``bn1``, ``layer{i}...``), which
    are also mmdet's ``ResNet`` and nasdet's ``FlexResNet`` names.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``resnet152``.
    """

    ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision

        if arch not in self.ARCHS:
            raise NasdetError(
                f"unknown torchvision backbone, expected one of {self.ARCHS}", key=arch
            )
        net = getattr(torchvision.models, arch)(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(net, name))
        self.arch = arch

    def forward(self, x: Tensor) -> tuple[Tensor]:
        """Stem and the four stages."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return (self.layer4(self.layer3(self.layer2(self.layer1(x)))),)


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.backbone(x)[-1]
        return self.fc(feat.mean(dim=(2, 3)))


def _plain(obj: Any) -> Any:
    """Config values as plain JSON/pickle-safe Python (dicts, lists, scalars)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _detector_of(cfg: Config) -> dict:
    from nasdet.utils.config import detector_cfg

    model = cfg.get("model")
    if not isinstance(model, dict):
        raise NasdetError("config has no model", file=cfg.filename, key="model")
    return detector_cfg(model)


def build_source_backbone(source: str | Path | Config) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone to pre-train, in training mode, and how the detector normalises input.

    Args:
        source: A detector config (file or :class:`~mmengine.config.Config`), whose
            ``model.backbone`` is built with pretrained loading, frozen stages and
            ``norm_eval`` switched off; or a torchvision ResNet name (``resnet50``,
            also ``torchvision://resnet50``).

    Returns:
        ``(backbone, info)`` with ``info``: ``source`` (str), ``backbone`` (the config
        used, or the torchvision name), ``mean``/``std`` (0..255 scale) and
        ``channel_order`` (``'rgb'`` or ``'bgr'``, what the detector's network sees).
    """
    info: dict[str, Any] = dict(
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), channel_order="rgb"
    )
    if isinstance(source, Config) or str(source).endswith((".py", ".yaml", ".yml", ".json")):
        from mmdet.registry import MODELS
        from mmengine.utils import import_modules_from_strings

        from nasdet.models.utils.build import register_detection_modules
        from nasdet.train.config import load_config

        cfg = source if isinstance(source, Config) else load_config(source)
        if cfg.get("custom_imports"):
            import_modules_from_strings(**cfg.custom_imports)
        import nasdet.models  # noqa: F401

        register_detection_modules()
        det = _detector_of(cfg)
        bb = copy.deepcopy(dict(det.get("backbone") or {}))
        if not bb:
            raise NasdetError(
                "the detector has no backbone", file=cfg.filename, key="model.backbone"
            )
        bb["init_cfg"] = None
        bb.pop("pretrained", None)
        for key, value in (("frozen_stages", -1), ("norm_eval", False)):
            if key in bb or bb.get("type") in ("FlexResNet", "ResNet"):
                bb[key] = value
        net = MODELS.build(bb)
        if hasattr(net, "init_weights"):
            net.init_weights()
        layers = getattr(net, "res_layers", None)
        if layers and hasattr(net, "out_indices"):
            net.out_indices = (len(layers) - 1,)  # only the last stage feeds the classifier
        dp = det.get("data_preprocessor") or {}
        if dp.get("mean") is not None:
            info["mean"] = [float(v) for v in dp["mean"]]
            info["std"] = [float(v) for v in dp.get("std", [1.0, 1.0, 1.0])]
            # mmdet loads images as BGR; without bgr_to_rgb the network sees BGR.
            info["channel_order"] = "rgb" if dp.get("bgr_to_rgb", False) else "bgr"
        info["source"] = str(cfg.filename or source)
        info["backbone"] = _plain(bb)
        return net.train(), info
    name = str(source).removeprefix("torchvision://")
    net = TorchvisionResNetTrunk(name)
    info["source"] = f"torchvision:{name}"
    info["backbone"] = name
    return net.train(), info


def _out_channels(backbone: nn.Module, size: int) -> int:
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        c = backbone(torch.zeros(1, 3, size, size))[-1].shape[1]
    backbone.train(was)
    return int(c)


def _loaders(
    data: Path, info: dict, image_size: int | None, batch_size: int, workers: int, seed: int
):
    from torchvision import datasets, transforms

    for split in ("train", "val"):
        if not (data / split).is_dir():
            raise NasdetError(
                f"no {split}/ folder: expected an ImageNet-style layout {split}/<class>/*.png "
                "(tools/make_dataset.py classification DIR makes one)",
                file=data,
                key="--data",
            )
    mean = [m / 255.0 for m in info["mean"]]
    std = [s / 255.0 for s in info["std"]]
    order = [2, 1, 0] if info["channel_order"] == "bgr" else [0, 1, 2]

    def to_order(t: Tensor) -> Tensor:
        return t[order]

    tail = [
        transforms.ToTensor(),
        transforms.Lambda(to_order),
        transforms.Normalize([mean[i] for i in order], [std[i] for i in order]),
    ]
    if image_size:
        train_tf = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
        val_tf = [
            transforms.Resize(math.ceil(image_size * 8 / 7)),
            transforms.CenterCrop(image_size),
        ]
    else:
        train_tf, val_tf = [transforms.RandomHorizontalFlip()], []
    train_set = datasets.ImageFolder(str(data / "train"), transforms.Compose(train_tf + tail))
    val_set = datasets.ImageFolder(str(data / "val"), transforms.Compose(val_tf + tail))
    if train_set.classes != val_set.classes:
        raise NasdetError("train/ and val/ hold different class folders", file=data, key="--data")
    gen = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=gen,
        drop_last=len(train_set) > batch_size,
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size, num_workers=workers)
    return train_loader, val_loader, list(train_set.classes)


@torch.no_grad()
def _top1(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.train()
    return correct / max(total, 1)


def pretrain(
    source: str | Path | Config,
    *,
    data: str | Path | None = None,
    epochs: int = DEFAULT_EPOCHS,
    work_dir: str | Path = "work_dirs/pretrain",
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    image_size: int | None = None,
    seed: int = 0,
    workers: int = 0,
    device: str | None = None,
    filename: str = "backbone.pth",
    dataset_spec: dict[str, Any] | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Train ``source``'s backbone with a linear classifier and save the backbone.

    SGD (momentum 0.9, ``weight_decay`` on all weights) with a cosine learning-rate
    decay over all iterations, cross-entropy loss, global average pooling of the last
    stage before the linear layer. Top-1 accuracy on ``val/`` is measured after each
    epoch. The checkpoint is written atomically at the end, with ``pretrain_metrics.json``
    next to it.

    Args:
        source: Detector config or torchvision ResNet name (see
            :func:`build_source_backbone`).
        data: ImageNet-style folder with ``train/<class>/`` and ``val/<class>/``; None
            generates (once) the synthetic source task in :data:`DEFAULT_DATA`.
        epochs: Passes over ``train/``.
        work_dir: Output directory.
        batch_size: Images per step.
        lr: Peak learning rate.
        weight_decay: L2 weight decay.
        image_size: Train on random resized crops of this side (val: resize + centre
            crop); None keeps the images' own size (the synthetic task's 64 px).
        seed: Seed of initialisation and data order.
        workers: DataLoader worker processes.
        device: ``'cuda'``, ``'cpu'``...; default CUDA when available.
        filename: Checkpoint file name inside ``work_dir``.
        dataset_spec: Spec fields for the generated synthetic task (``data=None`` only).
        progress: Show progress bars.

    Returns:
        A :class:`PretrainResult`.

    Raises:
        NasdetError: Missing data folders, unknown backbone, bad options.
    """
    from nasdet.utils.progress import progress as progress_bar

    if not isinstance(epochs, int) or epochs < 1:
        raise NasdetError(f"must be a positive integer, got {epochs!r}", key="--epochs")
    if data is None:
        from nasdet.data import ensure_dataset

        data = ensure_dataset(
            "classification", DEFAULT_DATA, progress=progress, **(dataset_spec or {})
        )
    data = Path(data)
    if not data.is_dir():
        raise NasdetError("dataset folder not found", file=data, key="--data")
    torch.manual_seed(seed)
    backbone, info = build_source_backbone(source)
    train_loader, val_loader, classes = _loaders(data, info, image_size, batch_size, workers, seed)
    first = train_loader.dataset[0][0]
    channels = _out_channels(backbone, int(first.shape[-1]))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _Classifier(backbone, channels, len(classes)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    total_steps = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        seen = correct = 0
        loss_sum = 0.0
        bar = progress_bar(
            train_loader,
            desc=f"pretrain epoch {epoch}/{epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = len(y)
            seen += n
            loss_sum += loss.item() * n
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{correct / seen:.3f}")
        val_top1 = _top1(model, val_loader, dev)
        history.append(
            dict(
                epoch=epoch,
                train_loss=loss_sum / max(seen, 1),
                train_top1=correct / max(seen, 1),
                val_top1=val_top1,
                seconds=time.perf_counter() - t0,
            )
        )
        if progress:
            print(
                f"pretrain epoch {epoch}/{epochs}: train loss {loss_sum / max(seen, 1):.4f}, "
                f"train top-1 {correct / max(seen, 1):.3f}, val top-1 {val_top1:.3f}"
            )
    seconds = time.perf_counter() - start
    out = Path(work_dir) / filename
    meta = dict(
        format=CHECKPOINT_FORMAT,
        source=info["source"],
        backbone=info["backbone"],
        data=str(data),
        classes=classes,
        epochs=epochs,
        val_top1=history[-1]["val_top1"],
        history=history,
        image_size=image_size,
        mean=info["mean"],
        std=info["std"],
        channel_order=info["channel_order"],
        seed=seed,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        train_seconds=seconds,
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        torch=str(torch.__version__),
        units=dict(
            val_top1="fraction of val images",
            train_loss="cross-entropy (nats)",
            train_seconds="wall clock",
        ),
    )
    meta = _plain(meta)  # plain types only: loadable with torch.load(weights_only=True)
    ckpt = dict(
        state_dict={k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        classifier={k: v.detach().cpu() for k, v in model.fc.state_dict().items()},
        meta=meta,
    )
    atomic_write(out, lambda p: torch.save(ckpt, p))
    atomic_write_json(
        out.with_name("pretrain_metrics.json"),
        {k: v for k, v in meta.items() if k != "backbone"} | {"checkpoint": str(out)},
    )
    return PretrainResult(
        checkpoint=out,
        val_top1=history[-1]["val_top1"],
        history=history,
        classes=classes,
        train_seconds=seconds,
    )


def describe_checkpoint(path: str | Path) -> str:
    """One line about a pre-training checkpoint (its source, data and accuracy).

    Args:
        path: A checkpoint written by :func:`pretrain` (others are described by size).
    """
    from nasdet.utils.checkpoint import load_checkpoint_file

    ckpt = load_checkpoint_file(path)
    meta = ckpt.get("meta") or {}
    n = len(ckpt["state_dict"])
    if meta.get("format") != CHECKPOINT_FORMAT:
        return f"{path}: {n} tensors"
    return (
        f"{path}: {n} backbone tensors from {meta['source']}, {meta['epochs']} epochs on "
        f"{meta['data']} ({len(meta['classes'])} classes), val top-1 "
        f"{meta['val_top1']:.3f} (fraction)"
    )
