"""Eigenspectra of a detector's layers, measured on images of its config's dataset.

The MMDetection-facing half of the eigenspectrum engine: the rest of :mod:`nasdet.spectrum`
knows covariances and measures, this module knows detectors. It builds the detector of a
config (random init or a checkpoint), runs a fixed set of images through it in eval
mode with a :class:`~nasdet.spectrum.SpectrumProbe` attached, and returns per layer
the channel count, the number of samples, the covariance eigenvalues and their ID
measures.

How a spectrum is measured (the same for :func:`nasdet.spectrum.analysis.analyze_checkpoints` and
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

import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from nasdet.data.roots import prepare_data
from nasdet.errors import NasdetError
from nasdet.spectrum.covariance import StreamingCovariance
from nasdet.spectrum.measures import DEFAULT_REL_LAMBDA, eigenvalues, spectrum_measures
from nasdet.spectrum.probes import LayerSpectrum, SpectrumProbe, select_modules
from nasdet.utils.output import quiet_init_logs

#: Top-level modules that ``model.extract_feat`` runs; any other probed layer needs the
#: full ``predict`` forward.
FEATURE_PREFIXES = ("backbone", "neck", "data_preprocessor")


#: Dataset splits a probe set can come from (``<split>_dataloader`` of the config).
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- model
def _no_scope() -> bool:
    """Whether no registry scope is set yet (then mmdet's becomes the default; a running
    Runner's own scope, e.g. of a downstream codebase, is never replaced)."""
    from mmengine.registry import DefaultScope

    return DefaultScope.get_current_instance() is None


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

    ds_cfg = _probe_dataset_cfg(cfg, split)
    prepare_data(cfg, progress=False)
    register_all_modules(init_default_scope=_no_scope())
    with quiet_init_logs():
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
    elif all_reduce and not (torch.distributed.is_available()
                             and torch.distributed.is_initialized()):
        raise NasdetError("all_reduce needs an initialised torch.distributed process group "
                          "(init_process_group)", file=file, key="all_reduce")
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
