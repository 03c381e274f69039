"""Parameters and multiply-accumulates of candidates, and the space's budget.

What the numbers mean:

* ``params``: scalars in the *distinct* Parameters of the built detector
  (:func:`~nasdet.models.count_parameters`): a tied FlexResNet block, a shared FPN
  conv or a shared head tower is counted once; frozen parameters count too.
* ``macs``: multiply-accumulates for **one image** of the space's ``input_size``
  ``(H, W)`` (the padded tensor the network sees), counted by mmengine's
  :class:`~mmengine.analysis.FlopAnalyzer` (a ``torch.jit`` trace; one fused
  multiply-add counts 1) with only its convolution, linear and matrix-product handles:
  normalisation, activations, upsampling, pooling, RoIAlign and NMS are not counted.
* The forward that is counted: ``model.extract_feat`` (backbone and neck), then each
  dense head's ``forward`` (``rpn_head``, or a one-stage ``bbox_head``), then for a
  two-stage detector the RoI box head (``roi_head._bbox_forward``) on exactly
  ``test_cfg.rpn.max_per_img`` fixed RoIs, the most proposals its RPN passes on at test
  time, and a mask head on ``test_cfg.rcnn.max_per_img`` RoIs. mmdet's
  ``mode='tensor'`` forward would feed the RoI head whatever survives NMS, which depends
  on the weights; a fixed count keeps the number a property of the architecture.
* The detector counted is the one the candidate deploys: a transfer strategy that
  changes the detector itself without a checkpoint (``scratch``: GroupNorm, mmdet's
  4conv1fc box head) is applied; strategies that start from a checkpoint only change
  initialisation and freezing, or add training-time modules (a feature-transfer
  teacher and its adapters), so the detector is counted without them (and no
  checkpoint is needed to count it).

Numbers are cached per candidate key, in memory and optionally in a JSON file written
atomically; the file records the space's fingerprint (its YAML and base config) and is
ignored when the space changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.utils.io import atomic_write_json

if TYPE_CHECKING:
    from mmengine.config import Config

    from nasdet.space.space import Candidate, SearchSpace

__all__ = [
    "MACS_UNIT",
    "PARAMS_UNIT",
    "Complexity",
    "ComplexityCache",
    "base_complexity",
    "build_detector",
    "candidate_complexity",
    "check_constraints",
    "config_complexity",
    "count_macs",
    "deployed_config",
    "model_complexity",
]

PARAMS_UNIT = "parameters (scalars in distinct tensors, shared ones counted once)"
MACS_UNIT = (
    "multiply-accumulates per image at input_size (conv/linear/matmul, mmengine FlopAnalyzer)"
)


@dataclass(frozen=True)
class Complexity:
    """A detector's size and cost.

    Args:
        params: Distinct parameter scalars.
        macs: Multiply-accumulates for one ``input_size`` image (see the module doc).
        input_size: ``(H, W)`` of the counted input.
        rois: RoIs per image fed to the RoI box head (0 for one-stage detectors).
    """

    params: int
    macs: int
    input_size: tuple[int, int]
    rois: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with units."""
        return {
            "params": self.params,
            "params_unit": PARAMS_UNIT,
            "macs": self.macs,
            "macs_unit": MACS_UNIT,
            "input_size": list(self.input_size),
            "rois": self.rois,
        }

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to the fields of :meth:`to_dict` (``c["macs"]``)."""
        return self.to_dict()[key]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Complexity:
        """Inverse of :meth:`to_dict`."""
        return cls(
            params=int(data["params"]),
            macs=int(data["macs"]),
            input_size=tuple(data["input_size"]),
            rois=int(data.get("rois", 0)),
        )


# ---------------------------------------------------------------------------- counting
def _flatten(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _flatten(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in _flatten(v)]
    return []


def fixed_rois(num: int, input_size: tuple[int, int]) -> Tensor:
    """``num`` deterministic RoIs ``(batch_idx, x1, y1, x2, y2)`` spread over the image.

    Sizes cycle through 16, 32, 64, ... px so every FPN level gets some; the count, not
    the boxes, sets the RoI head's MACs.
    """
    h, w = input_size
    i = torch.arange(num, dtype=torch.float32)
    size = torch.clamp(16.0 * 2 ** (i % 5), max=float(min(h, w)))
    x1 = torch.remainder(i * 37.0, torch.clamp(w - size, min=1.0))
    y1 = torch.remainder(i * 61.0, torch.clamp(h - size, min=1.0))
    return torch.stack([torch.zeros(num), x1, y1, x1 + size, y1 + size], dim=1)


class _CountedForward(nn.Module):
    """The forward whose operations are counted (see the module doc)."""

    def __init__(self, detector: nn.Module, rois: Tensor | None, mask_rois: Tensor | None):
        super().__init__()
        self.detector = detector
        self.rois = rois
        self.mask_rois = mask_rois

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        feats = self.detector.extract_feat(inputs)
        outs: list[Tensor] = []
        for name in ("rpn_head", "bbox_head"):
            head = getattr(self.detector, name, None)
            if isinstance(head, nn.Module):
                outs += _flatten(head(feats))
        roi_head = getattr(self.detector, "roi_head", None)
        if roi_head is not None and self.rois is not None:
            outs += _flatten(roi_head._bbox_forward(feats, self.rois))
            if self.mask_rois is not None and getattr(roi_head, "with_mask", False):
                outs += _flatten(roi_head._mask_forward(feats, self.mask_rois))
        return tuple(outs)


def count_macs(module: nn.Module, inputs: Tensor) -> int:
    """Conv/linear/matmul multiply-accumulates of ``module(inputs)``, by FlopAnalyzer.

    Args:
        module: A module whose forward takes one tensor.
        inputs: The input batch.

    Returns:
        The total over the batch.
    """
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        linear_flop_jit,
        matmul_flop_jit,
    )

    logger = logging.getLogger("mmengine")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow
            analyzer = FlopAnalyzer(module, (inputs,))
            analyzer.clear_op_handles()
            analyzer.set_op_handle(
                **{
                    "aten::_convolution": conv_flop_jit,
                    "aten::addmm": addmm_flop_jit,
                    "aten::bmm": bmm_flop_jit,
                    "aten::einsum": einsum_flop_jit,
                    "aten::matmul": matmul_flop_jit,
                    "aten::mm": matmul_flop_jit,
                    "aten::linear": linear_flop_jit,
                }
            )
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            analyzer.tracer_warnings("none")
            return int(analyzer.total())
    finally:
        logger.setLevel(level)


def model_complexity(
    model: nn.Module, input_size: tuple[int, int], *, rois: int = 0, mask_rois: int = 0
) -> Complexity:
    """Parameters and MACs of a built MMDetection detector.

    Args:
        model: A detector with ``extract_feat`` (put in eval mode here).
        input_size: ``(H, W)`` of the one image counted.
        rois: RoIs fed to a two-stage detector's box head.
        mask_rois: RoIs fed to its mask head (if any).

    Returns:
        The :class:`Complexity`.

    Example:
        >>> from mmdet.utils import register_all_modules
        >>> from mmengine.config import Config
        >>> from nasdet.space import REPO_ROOT
        >>> register_all_modules()
        >>> cfg = Config.fromfile(REPO_ROOT / "configs/tiny_retinanet_synth.py")
        >>> c = model_complexity(build_detector(cfg), (128, 128))
        >>> c.params > 0 and c.macs > 0
        True
    """
    from nasdet.models import count_parameters

    if not hasattr(model, "extract_feat"):
        raise NasdetError(
            f"{type(model).__name__} is not an MMDetection detector (no extract_feat)", key="model"
        )
    roi_head = getattr(model, "roi_head", None)
    if roi_head is not None and (
        not hasattr(roi_head, "_bbox_forward") or getattr(roi_head, "num_stages", 1) != 1
    ):
        raise NasdetError(
            f"MACs of {type(roi_head).__name__} RoI heads are not supported "
            "(StandardRoIHead-like heads are)",
            key="model.roi_head.type",
        )
    h, w = input_size
    was_training = model.training
    model.eval()
    try:
        wrapper = _CountedForward(
            model,
            fixed_rois(rois, input_size) if roi_head is not None and rois else None,
            fixed_rois(mask_rois, input_size) if roi_head is not None and mask_rois else None,
        )
        macs = count_macs(wrapper, torch.zeros(1, 3, h, w))
    finally:
        model.train(was_training)
    return Complexity(
        params=count_parameters(model),
        macs=macs,
        input_size=(h, w),
        rois=rois if roi_head is not None else 0,
    )


def build_detector(cfg: Config) -> nn.Module:
    """``MODELS.build(cfg.model)`` with mmdet's modules and ``custom_imports`` registered."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    register_all_modules(init_default_scope=False)
    imports = cfg.get("custom_imports")
    if imports:
        import_modules_from_strings(**imports)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
        return MODELS.build(cfg.model)


def config_complexity(cfg: Config, input_size: tuple[int, int]) -> Complexity:
    """Build ``cfg.model`` and count it (RoI counts from ``cfg.model.test_cfg``)."""
    test_cfg = cfg.model.get("test_cfg") or {}
    rois = (
        int((test_cfg.get("rpn") or {}).get("max_per_img", 1000)) if "roi_head" in cfg.model else 0
    )
    mask = "mask_head" in (cfg.model.get("roi_head") or {})
    mask_rois = int((test_cfg.get("rcnn") or {}).get("max_per_img", 100)) if mask else 0
    return model_complexity(build_detector(cfg), input_size, rois=rois, mask_rois=mask_rois)


# ---------------------------------------------------------------------------- caching
def space_fingerprint(space: SearchSpace) -> str:
    """16 hex digits over the space's YAML mapping and its base config."""
    text = json.dumps(
        {"space": space.raw, "base": space.base_config().to_dict()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ComplexityCache:
    """Complexity by candidate key, in memory and optionally in a JSON file.

    The file is rewritten atomically after each new entry (merging what other
    processes wrote meanwhile), so a killed run leaves a complete file. It is ignored
    when it was written for another space or another version of this one.

    Args:
        path: The JSON file, or None for memory only.
        space: The space whose candidates are cached (for the fingerprint).
    """

    def __init__(self, path: str | Path | None = None, *, space: SearchSpace | None = None):
        self.path = Path(path) if path is not None else None
        self.space_name = space.name if space is not None else None
        self._fingerprint: str | None = None
        self._space = space
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path is not None:
            self._entries.update(self._read())

    @property
    def fingerprint(self) -> str | None:
        """The space's fingerprint (computed once)."""
        if self._fingerprint is None and self._space is not None:
            self._fingerprint = space_fingerprint(self._space)
        return self._fingerprint

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise NasdetError(
                f"unreadable complexity cache ({exc}); delete it to start over", file=self.path
            ) from None
        if not isinstance(data, dict) or data.get("fingerprint") != self.fingerprint:
            return {}
        entries = data.get("entries")
        return dict(entries) if isinstance(entries, dict) else {}

    def get(self, key: str) -> Complexity | None:
        """The cached complexity of ``key``, or None."""
        entry = self._entries.get(key)
        return Complexity.from_dict(entry["complexity"]) if entry else None

    def put(
        self, key: str, complexity: Complexity, params: Mapping[str, Any] | None = None
    ) -> None:
        """Store an entry (and rewrite the file, if any)."""
        self._entries[key] = {"params": dict(params or {}), "complexity": complexity.to_dict()}
        if self.path is None:
            return
        merged = {**self._read(), **self._entries}
        self._entries = merged
        atomic_write_json(
            self.path,
            {
                "space": self.space_name,
                "fingerprint": self.fingerprint,
                "params_unit": PARAMS_UNIT,
                "macs_unit": MACS_UNIT,
                "entries": merged,
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def deployed_config(candidate: Candidate) -> Config:
    """The config whose model :func:`candidate_complexity` counts (see the module doc)."""
    space = candidate.space
    sdim = space.strategy_dimension
    strategy = candidate.values.get(sdim.name) if sdim is not None else None
    known = space.transfer_strategies() if strategy is not None else None
    if known is None or strategy not in known or getattr(known[strategy], "needs_checkpoint", True):
        return candidate.to_config(transfer=False)
    cfg = candidate.to_config(transfer=True)
    model = cfg.model
    while isinstance(model, Mapping) and "detector" in model and "backbone" not in model:
        model = model["detector"]  # transfer wrappers hold the detector under `detector`
    cfg.model = model
    return cfg


def candidate_complexity(candidate: Candidate, cache: ComplexityCache | None = None) -> Complexity:
    """Complexity of a candidate's architecture (transfer not applied), cached by key.

    Args:
        candidate: The candidate.
        cache: Defaults to the space's cache (``space.cache``).

    Raises:
        NasdetError: the candidate's model does not build (naming the space file and
            the candidate key).

    Example:
        >>> from nasdet.space import REPO_ROOT, SearchSpace
        >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
        >>> c = candidate_complexity(space.default_candidate())
        >>> c.input_size
        (128, 128)
    """
    cache = candidate.space.cache if cache is None else cache
    found = cache.get(candidate.key)
    if found is not None:
        return found
    space = candidate.space
    cfg = deployed_config(candidate)
    try:
        result = config_complexity(cfg, space.input_size)
    except NasdetError:
        raise
    except Exception as exc:  # a model that does not build: report the candidate
        raise NasdetError(
            f"candidate {candidate.key} {dict(candidate.params)} does not "
            f"build: {type(exc).__name__}: {exc}",
            file=space.file,
            key="dimensions",
        ) from exc
    cache.put(candidate.key, result, candidate.params)
    return result


def base_complexity(space: SearchSpace, cache: ComplexityCache | None = None) -> Complexity:
    """Complexity of the space's base config (with ``base_options``), cached as ``base``."""
    cache = space.cache if cache is None else cache
    found = cache.get("base")
    if found is None:
        found = config_complexity(space.base_config(), space.input_size)
        cache.put("base", found)
    return found


def check_constraints(
    candidate: Candidate, cache: ComplexityCache | None = None
) -> tuple[bool, str]:
    """Check a candidate against its space's ``constraints`` before any training.

    Args:
        candidate: The candidate.
        cache: Defaults to the space's cache.

    Returns:
        ``(ok, reason)``: ``reason`` lists every limit exceeded, or says the candidate
        is within budget, with the numbers.

    Example:
        >>> from nasdet.space import REPO_ROOT, SearchSpace
        >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
        >>> ok, reason = check_constraints(space.default_candidate())
        >>> ok
        True
    """
    space = candidate.space
    limits = space.constraints
    if limits.empty:
        return True, "no constraints"
    c = candidate_complexity(candidate, cache)
    h, w = c.input_size
    over = []
    if limits.max_params is not None and c.params > limits.max_params:
        over.append(f"params {c.params:,} > max_params {limits.max_params:,.0f}")
    if limits.max_macs is not None and c.macs > limits.max_macs:
        over.append(f"MACs {c.macs:,} > max_macs {limits.max_macs:,.0f} (at {h}x{w})")
    if limits.needs_base:
        base = base_complexity(space, cache)
        for name, value, base_value, ratio in (
            ("params", c.params, base.params, limits.max_params_ratio),
            ("MACs", c.macs, base.macs, limits.max_macs_ratio),
        ):
            if ratio is not None and value > ratio * base_value:
                field = "max_params_ratio" if name == "params" else "max_macs_ratio"
                over.append(
                    f"{name} {value:,} > {field} {ratio:g} x base {base_value:,} "
                    f"= {ratio * base_value:,.0f}"
                )
    if over:
        return False, "; ".join(over)
    return True, f"within budget (params {c.params:,}, MACs {c.macs:,} at {h}x{w})"
