"""Eigenspectra and ID of a detector's layers for each of its checkpoints (one result dict).

How the spectra are measured: :mod:`nasdet.spectrum.detector`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nasdet.errors import NasdetError
from nasdet.models.utils.build import build_detector
from nasdet.spectrum.detector import (
    build_probe_dataset,
    iter_probe_batches,
    measure_spectra,
    needs_full_forward,
)
from nasdet.spectrum.measures import DEFAULT_REL_LAMBDA
from nasdet.utils.checkpoint import load_weights

#: Version tag of the dict :func:`analyze_checkpoints` returns (and the JSON written).
RESULT_FORMAT = "nasdet.spectrum-analysis/1"


def units() -> dict[str, str]:
    """What every number of a spectrum result means (stored next to the numbers).

    Returns:
        Field name -> unit and how it was measured.
    """
    return {
        "channels": "layer width: number of channels C of the output (count)",
        "count": "number of samples the covariance was estimated from: images x spatial "
                 "positions kept (after stride / max_positions), or rows of a 2-D output",
        "eigenvalues": "eigenvalues of the C x C channel covariance (unbiased, ddof=1) of "
                       "the layer's output, descending; squared activation units",
        "id_dof": "intrinsic dimensionality: Suzuki's degrees of freedom "
                  "N(lambda) = sum_j mu_j / (mu_j + lambda), in dimensions (channels)",
        "id_per_width": "id_dof / channels: fraction of the layer's width (0..1)",
        "dof_lambda": "the lambda used by id_dof, squared activation units",
        "participation_ratio": "(sum mu)^2 / sum mu^2, in dimensions",
        "effective_rank": "exp(entropy of mu / sum mu), in dimensions (Roy & Vetterli 2007)",
        "n_components_90/95/99": "number of leading principal components explaining "
                                 "90/95/99% of the total variance (count)",
        "num_eigenvalues": "number of eigenvalues (= channels)",
        "total_variance": "trace of the covariance, squared activation units",
        "max_eigenvalue": "largest eigenvalue, squared activation units",
    }


def lambda_rule(rel_lambda: float = DEFAULT_REL_LAMBDA, lam: float | None = None) -> str:
    """A sentence stating how ``lambda`` of ``N(lambda)`` was chosen.

    Args:
        rel_lambda: Relative ``lambda`` (fraction of the largest eigenvalue).
        lam: Absolute ``lambda``; overrides ``rel_lambda``.

    Returns:
        E.g. ``'lambda = 0.001 x largest eigenvalue of each layer (scale-free)'``.
    """
    if lam is not None:
        return f"lambda = {lam:g} (absolute, squared activation units; same for every layer)"
    return f"lambda = {rel_lambda:g} x largest eigenvalue of each layer (scale-free)"


# ----------------------------------------------------------------------------- analysis
def _default_labels(checkpoints: Sequence[str | None]) -> list[str]:
    labels = ["init" if c is None else Path(c).stem for c in checkpoints]
    if len(set(labels)) < len(labels):  # same file names in different folders
        labels = ["init" if c is None else f"{Path(c).parent.name}/{Path(c).stem}"
                  for c in checkpoints]
    if len(set(labels)) < len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return labels


def analyze_checkpoints(
    config: Any,
    checkpoints: Sequence[str | Path | None],
    *,
    layers: str | Sequence[str],
    num_images: int,
    batch_size: int = 1,
    split: str = "val",
    stride: int = 1,
    max_positions: int | None = None,
    rel_lambda: float = DEFAULT_REL_LAMBDA,
    lam: float | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Eigenspectra and ID of the selected layers for each checkpoint of one config.

    Every checkpoint sees the same images (the first ``num_images`` of ``split``, in
    order) and, with ``max_positions``, the same position subsets.

    Args:
        config: An mmengine ``Config`` (as :func:`nasdet.train.load_config` reads it).
        checkpoints: Checkpoint files; ``None`` is the config's initialisation (random
            unless its ``init_cfg`` names pretrained weights), labelled ``'init'``.
        layers: Presets (``'backbone_stages'``, ``'fpn'``, ``'rpn_head'``, ...) and/or
            full-match regular expressions over module names.
        num_images: Images to run (fewer if the split is smaller; the number used is
            stored).
        batch_size: Images per forward (padding to the largest image of a batch adds
            samples; see the module docstring).
        split: ``'val'``, ``'test'`` or ``'train'``.
        stride: Keep every ``stride``-th spatial position per dim.
        max_positions: Keep at most this many random positions per image and layer.
        rel_lambda: ``lambda`` of ``N(lambda)`` relative to each layer's largest
            eigenvalue.
        lam: Absolute ``lambda`` (overrides ``rel_lambda``).
        labels: One label per checkpoint (default: ``'init'`` / file stem).
        seed: Seed of the random initialisation and of the position subsets.
        device: Where to run (default: CUDA if available, else CPU).
        progress: Progress bar over images for each checkpoint.

    Returns:
        ``{"format", "meta", "checkpoints"}``: ``meta`` holds the config, split, number
        of images, layer selection, forward used, lambda rule and :func:`units`;
        ``checkpoints`` is a list (in the given order) of ``{"label", "checkpoint",
        "layers"}`` where ``layers`` maps each probe entry to ``{"name", "count",
        "channels", "eigenvalues", "measures"}``.

    Raises:
        NasdetError: Bad layer selection, a checkpoint that does not fit the config, a
            missing file, or a bad option (naming the file and key).

    Example:
        >>> from nasdet.train import load_config
        >>> res = analyze_checkpoints(load_config('configs/tiny_faster_rcnn_synth.py'),
        ...                           [None, 'work_dirs/x/epoch_1.pth'],
        ...                           layers=['backbone_stages'], num_images=32)  # doctest: +SKIP
        >>> res['checkpoints'][1]['layers']['backbone.layer4']['measures']['id_dof']  # doctest: +SKIP
    """
    cfg = config
    file = cfg.filename or "<config>"
    if int(num_images) < 1:
        raise NasdetError(f"must be >= 1, got {num_images}", key="--num-images")
    if not checkpoints:
        raise NasdetError("no checkpoint given (use None for the initialisation)",
                          key="checkpoints")
    checkpoints = [None if c is None else str(c) for c in checkpoints]
    for ckpt in checkpoints:
        if ckpt is not None and not Path(ckpt).is_file():
            raise NasdetError("checkpoint file not found", file=ckpt)
    if labels is None:
        labels = _default_labels(checkpoints)
    labels = [str(label) for label in labels]
    if len(labels) != len(checkpoints):
        raise NasdetError(f"{len(labels)} labels for {len(checkpoints)} checkpoints",
                          key="--labels")
    if len(set(labels)) != len(labels):
        raise NasdetError(f"labels must differ, got {labels}", key="--labels")
    layer_specs = [layers] if isinstance(layers, str) else list(layers)
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")

    dataset = build_probe_dataset(cfg, split)
    n = min(int(num_images), len(dataset))
    if n == 0:
        raise NasdetError(f"the {split} dataset is empty", file=file, key=f"{split}_dataloader")
    if n < int(num_images):
        print(f"warning: {file}: --num-images: {int(num_images)} requested but the {split} "
              f"split has {len(dataset)} images: using {n}", file=sys.stderr, flush=True)
    workers = int((cfg.get(f"{split}_dataloader") or {}).get("num_workers", 0) or 0)

    runs: list[dict[str, Any]] = []
    full_forward = None
    for ckpt, label in zip(checkpoints, labels, strict=True):
        model = build_detector(cfg, seed=seed, init_weights=ckpt is None)
        ckpt_meta = load_weights(model, ckpt) if ckpt is not None else {}
        model.to(dev)
        if full_forward is None:
            try:
                full_forward = needs_full_forward(model, layer_specs)
            except NasdetError as err:
                raise NasdetError(err.message, file=file, key=err.key) from None
        spectra = measure_spectra(
            model, iter_probe_batches(dataset, range(n), batch_size, num_workers=workers),
            layers=layer_specs, full_forward=full_forward, stride=stride,
            max_positions=max_positions, seed=seed, rel_lambda=rel_lambda, lam=lam,
            all_reduce=False, progress=progress, total_images=n, desc=label, file=file)
        runs.append({
            "label": label,
            "checkpoint": ckpt,
            "checkpoint_epoch": ckpt_meta.get("epoch"),
            "checkpoint_iter": ckpt_meta.get("iter"),
            "layers": {name: s.to_dict() for name, s in spectra.items()},
        })
        del model
    return {
        "format": RESULT_FORMAT,
        "meta": {
            "config": str(file),
            "split": split,
            "num_images": n,
            "num_images_requested": int(num_images),
            "batch_size": int(batch_size),
            "layers": layer_specs,
            "stride": int(stride),
            "max_positions": max_positions,
            "seed": int(seed),
            "forward": "model.predict (full detector, eval mode)" if full_forward
                       else "model.extract_feat (backbone + neck, eval mode)",
            "lambda_rule": lambda_rule(rel_lambda, lam),
            "rel_lambda": None if lam is not None else float(rel_lambda),
            "lam": lam,
            "device": str(dev),
            "samples": "images x spatial positions of each output (padding included); "
                       "2-D outputs: rows; a layer run per pyramid level pools the levels",
            "units": units(),
        },
        "checkpoints": runs,
    }
