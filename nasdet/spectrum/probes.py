"""Forward hooks that stream layer outputs into per-layer covariance accumulators.

Layers are selected by module name (the names of ``model.named_modules()``) with regular
expressions that must match the whole name, or by presets that follow MMDetection's
module naming (``backbone.layer1`` ... for ResNet stages, ``neck`` for the FPN, and so on):

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
>>> with SpectrumProbe(model, ["0", "2"]) as probe:
...     _ = model(torch.randn(2, 3, 16, 16))
>>> {name: r.channels for name, r in probe.results().items()}
{'0': 8, '2': 4}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.spectrum.covariance import StreamingCovariance
from nasdet.spectrum.measures import DEFAULT_REL_LAMBDA, eigenvalues, spectrum_measures

__all__ = ["PRESETS", "LayerSpectrum", "Preset", "SpectrumProbe", "select_modules"]


@dataclass(frozen=True)
class Preset:
    """A named layer selection.

    Args:
        patterns: Regular expressions, each matched against the whole module name.
        module_type: If set, only modules of this type are selected.
        description: What the preset selects, for error messages and documentation.
    """

    patterns: tuple[str, ...]
    module_type: type[nn.Module] | None = None
    description: str = ""


#: Presets, following MMDetection 3.x module names (``mmdet.models``):
#: ResNet/ResNeXt/RegNet register their stages as ``layer1`` ... ``layer4`` and the
#: residual blocks as ``layerK.i``; CSPDarknet calls its stages ``stage1`` ...; two-stage
#: detectors have ``neck``, ``rpn_head`` and ``roi_head``, one-stage ones ``bbox_head``.
PRESETS: dict[str, Preset] = {
    "backbone_stages": Preset(
        (r"backbone\.layer\d+", r"backbone\.stage\d+"),
        description="output of each backbone stage (ResNet layerK, CSPDarknet stageK)",
    ),
    "res_blocks": Preset(
        (r"backbone\.layer\d+\.\d+",),
        description="output of every residual block of a ResNet-style backbone",
    ),
    "convs": Preset((r".+",), nn.Conv2d, description="output of every nn.Conv2d"),
    "fpn": Preset((r"neck",), description="each output level of the neck (neck.0, neck.1, ...)"),
    "rpn_head": Preset(
        (r"rpn_head\.rpn_conv",),
        description="shared RPN conv feature, all pyramid levels pooled",
    ),
    "roi_head": Preset(
        (
            r"roi_head\.bbox_head(?:\.\d+)?\.shared_(?:fcs|convs)\.\d+",
            r"roi_head\.mask_head(?:\.\d+)?\.convs\.\d+",
        ),
        description="RoI box head shared fcs/convs and mask head convs",
    ),
    "dense_head": Preset(
        (r"bbox_head\.(?:cls|reg)_convs\.\d+",),
        description="one-stage head towers (cls_convs / reg_convs), levels pooled",
    ),
}


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise NasdetError(f"invalid regular expression: {err}", key=pattern) from None


def select_modules(model: nn.Module, layers: str | Iterable[str]) -> dict[str, nn.Module]:
    """Modules of ``model`` selected by presets or full-match name patterns.

    Args:
        model: The model whose ``named_modules()`` are searched (the root itself, with
            the empty name, is never selected).
        layers: One or more entries; each is a key of :data:`PRESETS` or a regular
            expression that must match a module's whole name.

    Returns:
        Selected modules by name, in ``named_modules()`` order.

    Raises:
        NasdetError: If an entry matches no module (the message lists some names that
            exist) or is not a valid regular expression.
    """
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise NasdetError("no layers given", key="layers")
    named = [(name, module) for name, module in model.named_modules() if name]
    selected: set[str] = set()
    for spec in specs:
        preset = PRESETS.get(spec)
        patterns = preset.patterns if preset else (spec,)
        module_type = preset.module_type if preset else None
        compiled = [_compile(p) for p in patterns]
        hits = [
            name
            for name, module in named
            if any(c.fullmatch(name) for c in compiled)
            and (module_type is None or isinstance(module, module_type))
        ]
        if not hits:
            what = f"preset {spec!r} ({preset.description})" if preset else f"pattern {spec!r}"
            sample = ", ".join(name for name, _ in named[:12]) or "(none)"
            more = f", ... ({len(named)} modules)" if len(named) > 12 else ""
            raise NasdetError(
                f"{what} matches no module of {type(model).__name__}; "
                f"module names are e.g. {sample}{more}; presets: {', '.join(PRESETS)}",
                key=spec,
            )
        selected.update(hits)
    return {name: module for name, module in named if name in selected}


@dataclass
class LayerSpectrum:
    """The eigenspectrum of one probed layer output.

    Args:
        name: Entry name: the module name, plus ``.i`` per tuple/list level.
        count: Number of samples (images x positions kept).
        channels: Number of channels ``C``.
        eigenvalues: Covariance eigenvalues, float64, descending, ``(C,)``.
        measures: :func:`~nasdet.spectrum.measures.spectrum_measures` of them.
    """

    name: str
    count: int
    channels: int
    eigenvalues: torch.Tensor
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (eigenvalues as a list of floats)."""
        return {
            "name": self.name,
            "count": self.count,
            "channels": self.channels,
            "eigenvalues": self.eigenvalues.tolist(),
            "measures": dict(self.measures),
        }


class SpectrumProbe:
    """Accumulate the channel covariance of selected layer outputs during forwards.

    Hooks are registered on construction and removed by :meth:`remove` or when a
    ``with`` block exits. Each hook runs under ``torch.no_grad()`` on detached outputs
    and returns nothing, so the model's outputs and gradients are unchanged.

    Output handling (entry names):

    * a tensor with >= 3 dims ``(B, C, *spatial)``: samples are images x positions
      (entry ``name``);
    * a 2-D tensor ``(N, C)``: rows are samples (e.g. RoI fc features);
    * a tuple/list: one entry per element, ``name.0``, ``name.1``, ... (recursively;
      dicts give ``name.key``); ``None`` and non-tensor elements are skipped.

    A module called several times per forward (e.g. a head shared over pyramid levels)
    pools all calls into one entry. Accumulators are created lazily from the channel
    dim of the first output seen.

    Args:
        model: The model to probe.
        layers: Presets (:data:`PRESETS`) and/or full-match regular expressions over
            module names; see :func:`select_modules`.
        stride: Spatial subsampling of feature maps (every ``stride``-th position per
            spatial dim); not applied to 2-D outputs.
        max_positions: If set, at most this many random positions per image and layer
            call (after ``stride``); not applied to 2-D outputs.
        seed: Seed of the probe's own generator for ``max_positions``, so subsets are
            reproducible for the same sequence of forwards.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1))
        >>> probe = SpectrumProbe(net, "convs", stride=2)
        >>> _ = net(torch.randn(1, 3, 8, 8))
        >>> probe.remove()
        >>> probe.accumulators["0"].count
        16
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        *,
        stride: int = 1,
        max_positions: int | None = None,
        seed: int = 0,
    ):
        if int(stride) < 1:
            raise NasdetError(f"must be >= 1, got {stride}", key="stride")
        if max_positions is not None and int(max_positions) < 1:
            raise NasdetError(f"must be >= 1 or None, got {max_positions}", key="max_positions")
        self.model = model
        self.stride = int(stride)
        self.max_positions = None if max_positions is None else int(max_positions)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.modules = select_modules(model, layers)
        self._accumulators: dict[str, StreamingCovariance] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SpectrumProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove all hooks (idempotent). Accumulated statistics are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def reset(self) -> None:
        """Drop all accumulated statistics and restart the subset generator."""
        self._accumulators.clear()
        self._generator.manual_seed(self.seed)

    # ------------------------------------------------------------------ results
    @property
    def accumulators(self) -> dict[str, StreamingCovariance]:
        """The per-entry accumulators, in the order entries were first seen."""
        return dict(self._accumulators)

    def results(
        self,
        *,
        rel_lambda: float = DEFAULT_REL_LAMBDA,
        lam: float | None = None,
        ddof: int = 1,
    ) -> dict[str, LayerSpectrum]:
        """Eigenvalues and ID measures of every entry seen so far.

        Args:
            rel_lambda: Relative ``lambda`` of the degrees of freedom (see
                :data:`~nasdet.spectrum.measures.DEFAULT_REL_LAMBDA`).
            lam: Absolute ``lambda``; overrides ``rel_lambda``.
            ddof: Delta degrees of freedom of the covariance (1: unbiased).

        Returns:
            :class:`LayerSpectrum` by entry name, in the order entries were first seen
            (execution order of the first forward).

        Raises:
            NasdetError: If no forward ran through a selected layer, or a layer's
                features contained NaN/Inf (named by the error's key).
        """
        if not self._accumulators:
            raise NasdetError(
                "no probed layer has run yet; call the model's forward inside the probe",
                key=", ".join(self.modules),
            )
        out: dict[str, LayerSpectrum] = {}
        for name, acc in self._accumulators.items():
            try:
                eigs = eigenvalues(acc.covariance(ddof=ddof)).cpu()
            except NasdetError as err:
                raise NasdetError(err.message, key=name) from None
            out[name] = LayerSpectrum(
                name=name,
                count=acc.count,
                channels=acc.num_features,
                eigenvalues=eigs,
                measures=spectrum_measures(eigs, rel_lambda=rel_lambda, lam=lam),
            )
        return out

    def all_reduce(self, group: Any = None) -> None:
        """All-reduce every accumulator over ``group`` (see
        :meth:`StreamingCovariance.all_reduce`).

        Every process must have probed the same entries; they are reduced in sorted
        name order.

        Args:
            group: A ``torch.distributed`` process group (``None``: default group).
        """
        for name in sorted(self._accumulators):
            self._accumulators[name].all_reduce(group)

    def state_dict(self) -> dict[str, Any]:
        """Accumulator states by entry name (for checkpoints or merging later)."""
        return {name: acc.state_dict() for name, acc in self._accumulators.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore accumulators saved by :meth:`state_dict`."""
        self._accumulators.clear()
        for name, sub in state.items():
            acc = StreamingCovariance(int(sub["num_features"]))
            acc.load_state_dict(sub)
            self._accumulators[name] = acc

    # ------------------------------------------------------------------ hooks
    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # inference_mode(False): state created inside an inference-mode forward must
            # stay usable (updatable in place) outside it.
            with torch.inference_mode(False), torch.no_grad():
                if not self._consume(name, output):
                    raise NasdetError(
                        f"output of type {type(output).__name__} holds no tensor to probe",
                        key=name,
                    )

        return hook

    def _consume(self, name: str, output: Any) -> bool:
        if isinstance(output, torch.Tensor):
            self._feed(name, output)
            return True
        if isinstance(output, (tuple, list)):
            found = [self._consume(f"{name}.{i}", item) for i, item in enumerate(output)]
            return any(found)
        if isinstance(output, Mapping):
            found = [self._consume(f"{name}.{key}", item) for key, item in output.items()]
            return any(found)
        return False  # None, ints, shapes, data samples: nothing to measure

    def _feed(self, name: str, tensor: torch.Tensor) -> None:
        if tensor.ndim < 2:
            raise NasdetError(
                f"output has shape {tuple(tensor.shape)}: no channel dimension; probes need "
                "(N, C) samples or (B, C, *spatial) feature maps",
                key=name,
            )
        if not tensor.is_floating_point():
            raise NasdetError(
                f"output has dtype {tensor.dtype}; probes need real floating-point features",
                key=name,
            )
        tensor = tensor.detach()
        channels = tensor.shape[1]
        acc = self._accumulators.get(name)
        if acc is None:
            acc = StreamingCovariance(channels, device=tensor.device)
            self._accumulators[name] = acc
        elif acc.num_features != channels:
            raise NasdetError(
                f"output has {channels} channels, earlier calls had {acc.num_features}",
                key=name,
            )
        if tensor.ndim == 2:
            acc.update(tensor)
        else:
            acc.update_feature_map(
                tensor,
                stride=self.stride,
                max_positions=self.max_positions,
                generator=self._generator,
            )
