"""Eigenspectra of a detector's layers, measured on images of its config's dataset.

The MMDetection-facing half of the eigenspectrum engine: :mod:`nasdet.spectrum` knows
covariances and measures, this module knows detectors. It builds the detector of a
config (random init or a checkpoint), runs a fixed set of images through it in eval
mode with a :class:`~nasdet.spectrum.SpectrumProbe` attached, and returns per layer
the channel count, the number of samples, the covariance eigenvalues and their ID
measures.

How a spectrum is measured (the same for :func:`analyze_checkpoints` and
:class:`nasdet.hooks.EigenspectrumHook`):

* images: the first ``num_images`` images of a split, in dataset order, through a
  deterministic pipeline (the config's own test pipeline for ``val``/``test``; for
  ``train`` the train images through the test pipeline, so no random flip, resize or
  crop) and the model's ``data_preprocessor`` (normalised, padded to
  ``pad_size_divisor`` and, within a batch, to the largest image; padded positions are
  samples too, so ``batch_size=1`` keeps padding to a minimum);
* model: eval mode (BatchNorm uses its running statistics), no gradients; every
  module's train/eval flag is restored afterwards;
* forward: ``model.extract_feat`` when every probed layer lies in the backbone or the
  neck, else the full ``model.predict`` (heads, proposals, RoI features);
* samples: each output ``(B, C, H, W)`` gives ``B x H x W`` samples of dimension
  ``C`` (after ``stride`` / ``max_positions``); a 2-D output ``(N, C)`` gives ``N``
  (e.g. RoIs); a layer called once per pyramid level pools all levels;
* covariance: unbiased (``ddof=1``), float64 accumulation; eigenvalues descending, in
  squared activation units; ID measures from :func:`nasdet.spectrum.spectrum_measures`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.spectrum import (
    DEFAULT_REL_LAMBDA,
    LayerSpectrum,
    SpectrumProbe,
    StreamingCovariance,
    eigenvalues,
    select_modules,
    spectrum_measures,
)

__all__ = [
    "FEATURE_PREFIXES",
    "RESULT_FORMAT",
    "SPLITS",
    "analyze_checkpoints",
    "build_detector",
    "build_probe_dataset",
    "iter_probe_batches",
    "lambda_rule",
    "layer_entries",
    "load_weights",
    "measure_spectra",
    "needs_full_forward",
    "units",
]

#: Version tag of the dict :func:`analyze_checkpoints` returns (and the JSON written).
RESULT_FORMAT = "nasdet.spectrum-analysis/1"
#: Dataset splits a probe set can come from (``<split>_dataloader`` of the config).
SPLITS = ("train", "val", "test")
#: Top-level modules that ``model.extract_feat`` runs; any other probed layer needs the
#: full ``predict`` forward.
FEATURE_PREFIXES = ("backbone", "neck", "data_preprocessor")


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


# ----------------------------------------------------------------------------- model
def _no_scope() -> bool:
    """Whether no registry scope is set yet (then mmdet's becomes the default; a running
    Runner's own scope, e.g. of a downstream codebase, is never replaced)."""
    from mmengine.registry import DefaultScope

    return DefaultScope.get_current_instance() is None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence mmengine's per-parameter init log and pycocotools' index messages."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def build_detector(cfg: Any, *, seed: int | None = 0, init_weights: bool = True) -> nn.Module:
    """Build the detector of ``cfg`` with MMDetection's and nasdet's modules registered.

    Args:
        cfg: An mmengine ``Config`` with a ``model`` entry.
        seed: Seed of torch's global generator before building, so the random
            initialisation is reproducible (``None``: leave the generator alone).
        init_weights: Run ``model.init_weights()`` (what training starts from: random,
            or pretrained weights where the config's ``init_cfg`` names them). Skip it
            when a checkpoint overwrites every weight anyway.

    Returns:
        The model, on CPU, in train mode as built.

    Raises:
        NasdetError: An unknown module type in ``cfg.model``, or a build error, naming
            the config file.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401  (registers nasdet's modules)
    from nasdet.train.checks import check_model_types

    register_all_modules(init_default_scope=_no_scope())
    check_model_types(cfg)
    if seed is not None:
        torch.manual_seed(int(seed))
    try:
        model = MODELS.build(copy.deepcopy(cfg.model))
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise NasdetError(
            f"cannot build the model: {type(exc).__name__}: {exc}",
            file=cfg.filename or "<config>", key="model") from None
    if init_weights:
        with _quiet():
            model.init_weights()
    return model


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``model``, refusing one of another architecture.

    The file is read with ``weights_only=True`` (see :mod:`nasdet.utils.checkpoint`)
    and must fit strictly: every entry of the model present with the same shape.
    Extra entries (e.g. EMA copies) are ignored.

    Args:
        model: The model to load into (in place).
        path: The checkpoint file.

    Returns:
        The checkpoint's ``meta`` dict (``{}`` if it has none).

    Raises:
        NasdetError: Missing/unreadable file, or a checkpoint that does not fit the model
            (naming the file and the first offending key).
    """
    from nasdet.utils.checkpoint import check_state_dict_fits, load_checkpoint_file

    ckpt = load_checkpoint_file(path)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    check_state_dict_fits(model, state, file=path, strict=True)
    own = model.state_dict()
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    meta = ckpt.get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


# ----------------------------------------------------------------------------- data
def _inner_datasets(ds: Any) -> list[Any]:
    """Dataset dicts holding a pipeline, looking through Repeat/Concat/... wrappers."""
    if isinstance(ds, (list, tuple)):
        return [d for item in ds for d in _inner_datasets(item)]
    if "datasets" in ds:
        return _inner_datasets(ds["datasets"])
    if "dataset" in ds and "pipeline" not in ds:
        return _inner_datasets(ds["dataset"])
    return [ds]


def _probe_dataset_cfg(cfg: Any, split: str) -> Any:
    file = cfg.filename or "<config>"
    if split not in SPLITS:
        raise NasdetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}",
                          key="--split")
    loader = cfg.get(f"{split}_dataloader")
    if not loader or not loader.get("dataset"):
        raise NasdetError(f"the config has no {split}_dataloader.dataset to take images from",
                          file=file, key=f"{split}_dataloader")
    ds = copy.deepcopy(loader.dataset)
    if split != "train":
        return ds
    # Train images through the test pipeline: the probe set must not change between
    # measurements (no random flip, resize or crop). Mixing wrappers (Mosaic, MixUp)
    # are unwrapped: they only exist to build random training samples.
    while "dataset" in ds and "datasets" not in ds:
        ds = ds["dataset"]
    test_loader = cfg.get("val_dataloader") or cfg.get("test_dataloader")
    test_pipeline = None
    if test_loader and test_loader.get("dataset"):
        inner = _inner_datasets(test_loader.dataset)
        test_pipeline = inner[0].get("pipeline") if inner else None
    for inner in _inner_datasets(ds):
        if test_pipeline is not None:
            inner["pipeline"] = copy.deepcopy(test_pipeline)
        else:
            inner["pipeline"] = [t for t in inner.get("pipeline", [])
                                 if not str(t.get("type", "")).startswith("Random")]
    return ds


def build_probe_dataset(cfg: Any, split: str = "val") -> Any:
    """The dataset a probe set is drawn from, with a deterministic pipeline.

    Args:
        cfg: The config; its ``<split>_dataloader.dataset`` is built. A synthetic
            dataset the config describes (``synthetic_data``) is generated first if it
            is not on disk yet (:func:`nasdet.train.prepare_data`).
        split: ``'val'``, ``'test'`` (their own test pipelines) or ``'train'`` (the train
            images through the test pipeline: no random flip, resize or crop).

    Returns:
        The built mmdet dataset.

    Raises:
        NasdetError: Unknown split, a config without that dataloader, or missing data.
    """
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    from nasdet.train.config import prepare_data

    ds_cfg = _probe_dataset_cfg(cfg, split)
    prepare_data(cfg, progress=False)
    register_all_modules(init_default_scope=_no_scope())
    with _quiet():
        return DATASETS.build(ds_cfg)


def iter_probe_batches(
    dataset: Any,
    indices: Sequence[int],
    batch_size: int,
    *,
    num_workers: int = 0,
) -> Iterator[dict[str, Any]]:
    """Collated batches (as a dataloader yields them) of ``dataset[i]`` for ``indices``.

    Args:
        dataset: A dataset returning packed samples (``PackDetInputs``).
        indices: Dataset indices, in the order they are batched.
        batch_size: Images per batch (the last batch may be smaller).
        num_workers: Dataloader worker processes that load and transform images.

    Yields:
        Dicts with ``inputs`` (list of uint8 image tensors) and ``data_samples``.
    """
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader, Subset

    if int(batch_size) < 1:
        raise NasdetError(f"must be >= 1, got {batch_size}", key="batch_size")
    if not indices:
        return
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=int(batch_size),
                        shuffle=False, num_workers=int(num_workers), collate_fn=pseudo_collate)
    yield from loader


# ----------------------------------------------------------------------------- measuring
def needs_full_forward(model: nn.Module, layers: str | Sequence[str]) -> bool:
    """Whether the selected layers need ``predict`` rather than ``extract_feat``.

    Args:
        model: The detector.
        layers: Presets / patterns (see :func:`nasdet.spectrum.select_modules`).

    Returns:
        ``True`` if a selected module lies outside :data:`FEATURE_PREFIXES` or the model
        has no ``extract_feat``.
    """
    if not hasattr(model, "extract_feat"):
        return True
    names = select_modules(model, layers)
    return any(name.split(".", 1)[0] not in FEATURE_PREFIXES for name in names)


def layer_entries(module_name: str, entries: Iterable[str]) -> list[str]:
    """Probe entries that belong to ``module_name`` (itself or ``module_name.<i>...``)."""
    return [e for e in entries if e == module_name or e.startswith(module_name + ".")]


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sync_entries(accs: dict[str, StreamingCovariance], device: torch.device) -> None:
    """Give every process the same entries (an empty accumulator where it saw none)."""
    import torch.distributed as dist

    local = {name: acc.num_features for name, acc in accs.items()}
    gathered: list[dict[str, int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    for other in gathered:
        for name, channels in (other or {}).items():
            if name not in accs:
                accs[name] = StreamingCovariance(channels, device=device)
            elif accs[name].num_features != channels:
                raise NasdetError(
                    f"processes disagree on the channel count ({channels} vs "
                    f"{accs[name].num_features})", key=name)


def _move(data: dict[str, Any], device: torch.device) -> dict[str, Any]:
    samples = data.get("data_samples")
    if samples is not None:
        samples = [s.to(device) if hasattr(s, "to") else s for s in samples]
    return {"inputs": data["inputs"].to(device), "data_samples": samples}


def measure_spectra(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    *,
    layers: str | Sequence[str],
    preprocessed: bool = False,
    full_forward: bool | None = None,
    stride: int = 1,
    max_positions: int | None = None,
    seed: int = 0,
    rel_lambda: float = DEFAULT_REL_LAMBDA,
    lam: float | None = None,
    all_reduce: bool | None = None,
    progress: bool = False,
    total_images: int | None = None,
    desc: str = "spectrum",
    file: str | None = None,
) -> dict[str, LayerSpectrum]:
    """Run ``batches`` through ``model`` in eval mode and measure the selected layers.

    Args:
        model: The detector (not a DDP wrapper: pass ``wrapper.module``).
        batches: Dataloader batches (``preprocessed=False``), or outputs of
            ``model.data_preprocessor`` (dicts with ``inputs`` tensor and
            ``data_samples``; moved to the model's device here).
        layers: Presets / full-match patterns of module names.
        preprocessed: Whether ``batches`` already went through the data preprocessor.
        full_forward: ``predict`` (``True``) or ``extract_feat`` (``False``); ``None``
            decides with :func:`needs_full_forward`.
        stride: Spatial subsampling of feature maps (every ``stride``-th position).
        max_positions: At most this many random positions per image and layer call.
        seed: Seed of the probe's generator for ``max_positions``.
        rel_lambda: Relative ``lambda`` of ``N(lambda)``.
        lam: Absolute ``lambda``; overrides ``rel_lambda``.
        all_reduce: Sum the accumulators over all processes of ``torch.distributed``
            (every process must call this with its own share of the images). ``None``:
            when a process group of more than one process is initialised.
        progress: Show a progress bar over images.
        total_images: Number of images, for the progress bar.
        desc: Progress bar label.
        file: File named in errors (the config).

    Returns:
        :class:`~nasdet.spectrum.LayerSpectrum` per probe entry, in execution order;
        each ``measures`` dict also holds ``id_per_width`` (``id_dof / channels``).

    Raises:
        NasdetError: A pattern matching no module, a layer whose output has no channel
            dimension, or a selected layer that never ran during the forward.
    """
    from nasdet.utils.progress import progress as progress_bar

    if full_forward is None:
        full_forward = needs_full_forward(model, layers)
    if all_reduce is None:
        all_reduce = _distributed()
    device = next(model.parameters()).device
    flags = {m: m.training for m in model.modules()}
    model.eval()
    bar = progress_bar(total=total_images, desc=desc, unit="img", disable=not progress, leave=False)
    try:
        with torch.no_grad(), SpectrumProbe(model, layers, stride=stride,
                                            max_positions=max_positions, seed=seed) as probe:
            selected = list(probe.modules)
            for batch in batches:
                data = _move(batch, device) if preprocessed else \
                    model.data_preprocessor(batch, False)
                if full_forward:
                    model(data["inputs"], data["data_samples"], mode="predict")
                else:
                    model.extract_feat(data["inputs"])
                bar.update(int(data["inputs"].shape[0]))
    except NasdetError as err:
        raise NasdetError(err.message, file=err.file or file, key=err.key) from None
    finally:
        bar.close()
        for module, flag in flags.items():
            module.training = flag
    accs = probe.accumulators
    if all_reduce:
        _sync_entries(accs, device)
        for name in sorted(accs):
            accs[name].all_reduce()
    not_run = [name for name in selected if not layer_entries(name, accs)]
    if not_run:
        forward = "model.predict" if full_forward else "model.extract_feat"
        raise NasdetError(
            f"selected layer(s) {', '.join(not_run[:5])}{' ...' if len(not_run) > 5 else ''} "
            f"did not run during {forward} (a training-only module, or a method that is not "
            "a module call); choose layers that run at inference",
            file=file, key=not_run[0])
    out: dict[str, LayerSpectrum] = {}
    for name, acc in accs.items():
        try:
            eigs = eigenvalues(acc.covariance()).cpu()
        except NasdetError as err:
            raise NasdetError(err.message, file=file, key=name) from None
        measures = spectrum_measures(eigs, rel_lambda=rel_lambda, lam=lam)
        measures["id_per_width"] = measures["id_dof"] / acc.num_features
        out[name] = LayerSpectrum(name=name, count=acc.count, channels=acc.num_features,
                                  eigenvalues=eigs, measures=measures)
    return out


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
        config: An mmengine ``Config`` or the path of a config file.
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
        >>> res = analyze_checkpoints('configs/tiny_faster_rcnn_synth.py',
        ...                           [None, 'work_dirs/x/epoch_1.pth'],
        ...                           layers=['backbone_stages'], num_images=32)  # doctest: +SKIP
        >>> res['checkpoints'][1]['layers']['backbone.layer4']['measures']['id_dof']  # doctest: +SKIP
    """
    from nasdet.train.config import load_config

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
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
        import sys

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
