"""The one parameter and multiply-accumulate counter of MMDetection detectors.

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
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.models.utils.build import build_detector
from nasdet.models.utils.param_count import count_parameters
from nasdet.utils.tensors import flatten_tensors

if TYPE_CHECKING:
    from mmengine.config import Config

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
                outs += flatten_tensors(head(feats))
        roi_head = getattr(self.detector, "roi_head", None)
        if roi_head is not None and self.rois is not None:
            outs += flatten_tensors(roi_head._bbox_forward(feats, self.rois))
            if self.mask_rois is not None and getattr(roi_head, "with_mask", False):
                outs += flatten_tensors(roi_head._mask_forward(feats, self.mask_rois))
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
        >>> from mmengine.config import Config
        >>> from nasdet.utils.resources import data_root
        >>> cfg = Config.fromfile(data_root() / "configs/tiny_retinanet_synth.py")
        >>> c = model_complexity(build_detector(cfg), (128, 128))
        >>> c.params > 0 and c.macs > 0
        True
    """
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


def roi_counts(model_cfg: Any) -> tuple[int, int]:
    """RoIs counted for the box and the mask head: the most the test-time RPN passes on.

    Args:
        model_cfg: ``cfg.model`` (or a built detector: its ``test_cfg`` and heads).

    Returns:
        ``(rois, mask_rois)``: ``test_cfg.rpn.max_per_img`` (1000) for a two-stage
        detector, ``test_cfg.rcnn.max_per_img`` (100) with a mask head; 0 otherwise.
    """
    if isinstance(model_cfg, nn.Module):
        roi_head = getattr(model_cfg, "roi_head", None)
        test_cfg = getattr(model_cfg, "test_cfg", None) or {}
        two_stage, mask = roi_head is not None, bool(getattr(roi_head, "with_mask", False))
    else:
        test_cfg = model_cfg.get("test_cfg") or {}
        two_stage = "roi_head" in model_cfg
        mask = "mask_head" in (model_cfg.get("roi_head") or {})
    rois = int((test_cfg.get("rpn") or {}).get("max_per_img", 1000)) if two_stage else 0
    mask_rois = int((test_cfg.get("rcnn") or {}).get("max_per_img", 100)) if mask else 0
    return rois, mask_rois


def config_complexity(cfg: Config, input_size: tuple[int, int]) -> Complexity:
    """Build ``cfg.model`` and count it (RoI counts from ``cfg.model.test_cfg``)."""
    rois, mask_rois = roi_counts(cfg.model)
    model = build_detector(cfg, seed=None, init_weights=False)
    return model_complexity(model, input_size, rois=rois, mask_rois=mask_rois)
