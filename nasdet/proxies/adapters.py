"""Model adapters: how to run a model, kept apart from what a proxy computes.

A proxy asks an adapter for

* ``inputs()``: the probe image batch (``B×C×H×W``, already normalised);
* ``loss(model, inputs)``: the scalar training loss of the model on that batch;
* ``features(model, inputs)``: the feature maps the proxy reads (for a detector, the
  neck's levels);
* ``stage_features(model, inputs)``: the backbone's multi-scale stage outputs, highest
  resolution first (the "pre-GAP" maps of Zen-NAS, the stages of MAE-DET); defaults to
  ``features``;
* ``forward(model, inputs)``: the plain tensor forward used to count operations;
  defaults to ``features``.

``features``, ``stage_features`` and ``forward`` accept inputs other than ``inputs()``
(all-ones, Gaussian noise, other dtypes) of the same channel count; ``loss`` needs the
batch's own targets, so it only accepts a batch of the same size.

:class:`TorchAdapter` wraps a plain :class:`torch.nn.Module`; :class:`MMDetAdapter`
wraps an MMDetection detector and a data batch as a dataloader yields it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.utils.tensors import flatten_tensors

__all__ = ["MMDetAdapter", "ModelAdapter", "TorchAdapter", "flatten_tensors"]


class ModelAdapter(ABC):
    """How to run one model on one probe batch (the proxies' only view of the model)."""

    @abstractmethod
    def inputs(self) -> Tensor:
        """The probe batch, ``B×C×H×W`` and normalised, on the model's device."""

    @abstractmethod
    def loss(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Scalar training loss of ``model`` on ``inputs`` and the batch's targets."""

    @abstractmethod
    def features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        """The feature maps a proxy reads (e.g. FPN levels), as a list."""

    def stage_features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        """Backbone stage outputs, highest resolution first. Defaults to :meth:`features`."""
        return self.features(model, inputs)

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        """The tensor forward whose operations are counted. Defaults to :meth:`features`."""
        return self.features(model, inputs)

    @property
    def batch_size(self) -> int:
        """Number of images in the probe batch."""
        return int(self.inputs().shape[0])


def _named_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    available = dict(model.named_modules())
    missing = [n for n in names if n not in available]
    if missing:
        raise NasdetError(
            f"no such module in {type(model).__name__}; known names start with "
            f"{', '.join(list(available)[1:8])}",
            key=", ".join(missing),
        )
    return [available[n] for n in names]


def _hooked_outputs(model: nn.Module, names: Sequence[str], run: Callable[[], Any]) -> list[Tensor]:
    modules = _named_modules(model, names)
    outputs: dict[int, Tensor] = {}
    handles = []
    for i, module in enumerate(modules):
        def hook(_m: nn.Module, _inp: Any, out: Any, i: int = i) -> None:
            outputs[i] = out if isinstance(out, Tensor) else flatten_tensors(out)[0]
        handles.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    not_called = [names[i] for i in range(len(names)) if i not in outputs]
    if not_called:
        raise NasdetError("module was not called by the forward pass", key=", ".join(not_called))
    return [outputs[i] for i in range(len(names))]


class TorchAdapter(ModelAdapter):
    """Adapter for a plain ``nn.Module`` called as ``model(inputs)``.

    Args:
        inputs: The probe batch ``B×C×H×W`` (or ``B×D`` for an MLP).
        targets: Targets passed to ``loss_fn``.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``.
        feature_fn: ``feature_fn(model, inputs) -> list of tensors``; takes precedence
            over ``feature_modules``.
        feature_modules: Names (as in ``model.named_modules()``) whose outputs are the
            feature maps, captured with forward hooks during ``model(inputs)`` (a module
            called more than once contributes its last output). With
            neither ``feature_fn`` nor ``feature_modules`` the model's output is the one
            feature map.
        stage_fn: Like ``feature_fn`` for :meth:`stage_features`.
        stage_modules: Like ``feature_modules`` for :meth:`stage_features`. With neither,
            stage features are the features.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> adapter = TorchAdapter(torch.zeros(2, 3, 8, 8), feature_modules=["1", "2"])
        >>> [tuple(f.shape) for f in adapter.features(net, adapter.inputs())]
        [(2, 4, 6, 6), (2, 2, 4, 4)]
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Any = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None,
        feature_fn: Callable[[nn.Module, Tensor], Sequence[Tensor]] | None = None,
        feature_modules: Sequence[str] | None = None,
        stage_fn: Callable[[nn.Module, Tensor], Sequence[Tensor]] | None = None,
        stage_modules: Sequence[str] | None = None,
    ):
        self._inputs = inputs
        self.targets = targets
        self.loss_fn = loss_fn
        self.feature_fn = feature_fn
        self.feature_modules = list(feature_modules) if feature_modules else None
        self.stage_fn = stage_fn
        self.stage_modules = list(stage_modules) if stage_modules else None

    def inputs(self) -> Tensor:
        return self._inputs

    def loss(self, model: nn.Module, inputs: Tensor) -> Tensor:
        if self.loss_fn is None:
            raise NasdetError("this TorchAdapter has no loss_fn", key="loss_fn")
        return self.loss_fn(model(inputs), self.targets)

    def features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        if self.feature_fn is not None:
            return list(self.feature_fn(model, inputs))
        if self.feature_modules:
            return _hooked_outputs(model, self.feature_modules, lambda: model(inputs))
        return flatten_tensors(model(inputs))

    def stage_features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        if self.stage_fn is not None:
            return list(self.stage_fn(model, inputs))
        if self.stage_modules:
            return _hooked_outputs(model, self.stage_modules, lambda: model(inputs))
        return self.features(model, inputs)

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        return model(inputs)


def sum_losses(losses: Mapping[str, Any]) -> Tensor:
    """Total loss as mmengine's ``BaseModel.parse_losses`` forms it.

    Every entry whose key contains ``'loss'`` is reduced with ``mean()`` (a list of
    tensors contributes the sum of their means) and the reduced values are added.

    Args:
        losses: The dict a detector's ``loss()`` returns.
    """
    terms = []
    for key, value in losses.items():
        if "loss" not in key:
            continue
        if isinstance(value, Tensor):
            terms.append(value.mean())
        elif isinstance(value, (list, tuple)):
            terms.append(sum(v.mean() for v in value))
        else:
            raise NasdetError(f"loss term of type {type(value).__name__} is not a tensor", key=key)
    if not terms:
        raise NasdetError("the model returned no term whose key contains 'loss'",
                          key=", ".join(losses))
    return sum(terms[1:], terms[0])


class MMDetAdapter(ModelAdapter):
    """Adapter for an MMDetection detector and one data batch.

    The batch is passed once through ``model.data_preprocessor(batch, training=True)``
    (normalisation, padding, ``batch_input_shape``); the preprocessed inputs and data
    samples are kept.

    * ``loss``: ``model.loss(inputs, data_samples)``, summed over the keys containing
      ``'loss'`` as :func:`sum_losses` (mmengine's ``parse_losses``) does;
    * ``features``: ``model.extract_feat(inputs)`` (backbone and neck), as a list;
    * ``stage_features``: ``model.backbone(inputs)`` (the backbone's ``out_indices``
      stages), as a list;
    * ``forward``: ``model._forward(inputs, data_samples)``, MMDetection's ``'tensor'``
      mode (what ``tools/analysis_tools/get_flops.py`` counts).

    Args:
        model: The detector; only its ``data_preprocessor`` is used here, so the adapter
            can score any detector with the same preprocessing.
        data_batch: ``dict(inputs=[uint8 C×H×W tensors], data_samples=[DetDataSample])``
            as an mmdet dataloader yields it.
    """

    def __init__(self, model: nn.Module, data_batch: Mapping[str, Any]):
        for key in ("inputs", "data_samples"):
            if key not in data_batch:
                raise NasdetError("data batch lacks this key", key=key)
        preprocessor = getattr(model, "data_preprocessor", None)
        if preprocessor is None:
            raise NasdetError("model has no data_preprocessor; is it an mmdet detector?",
                              key=type(model).__name__)
        with torch.no_grad():
            data = preprocessor(dict(data_batch), training=True)
        self._inputs: Tensor = data["inputs"]
        self.data_samples = data["data_samples"]

    def inputs(self) -> Tensor:
        return self._inputs

    def _check_batch(self, inputs: Tensor) -> None:
        if inputs.shape[0] != len(self.data_samples):
            raise NasdetError(
                f"loss needs a batch of {len(self.data_samples)} images (one per data sample), "
                f"got {inputs.shape[0]}", key="inputs")

    def loss(self, model: nn.Module, inputs: Tensor) -> Tensor:
        self._check_batch(inputs)
        return sum_losses(model.loss(inputs, self.data_samples))

    def features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        return list(model.extract_feat(inputs))

    def stage_features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        return list(model.backbone(inputs))

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        self._check_batch(inputs)
        return model._forward(inputs, self.data_samples)
