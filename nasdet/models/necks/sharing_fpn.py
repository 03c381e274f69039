"""FPN whose 3x3 output convolutions can be one module shared by all levels."""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor, nn

from nasdet.errors import NasdetError

OUTPUT_SHARING = ("separate", "shared")


@MODELS.register_module()
class SharingFPN(FPN):
    """mmdet's FPN with a choice of sharing its output convolutions across levels.

    ``output_sharing='separate'`` is mmdet's FPN: one 3x3 output conv per backbone
    level, named ``fpn_convs.{i}``, followed by the extra-level convs. With
    ``'shared'`` a single 3x3 conv (``fpn_convs.0``, the same Parameters) smooths
    every backbone level, saving ``(L - 1) * (9 C^2 + C)`` parameters for ``L``
    backbone levels and ``C = out_channels`` (without norm); the stride-2 extra-level
    convs (RetinaNet's P6/P7) keep their own weights and move to
    ``extra_fpn_convs.{i}``. Lateral 1x1 convs are never shared (their input widths
    differ).

    Args:
        in_channels: Input channels per backbone level (e.g. a FlexResNet's
            ``stage_channels``).
        out_channels: Output channels of every level.
        num_outs: Number of output levels.
        output_sharing: ``'separate'`` (default) or ``'shared'``.
        **kwargs: The other arguments of mmdet's ``FPN`` (``start_level``,
            ``add_extra_convs``, ``norm_cfg``, ...).

    Example:
        >>> import torch
        >>> fpn = SharingFPN([8, 16], 4, num_outs=3, output_sharing='shared')
        >>> outs = fpn([torch.rand(1, 8, 8, 8), torch.rand(1, 16, 4, 4)])
        >>> [tuple(o.shape) for o in outs]
        [(1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 2, 2)]
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_outs: int,
        output_sharing: str = "separate",
        **kwargs,
    ) -> None:
        if output_sharing not in OUTPUT_SHARING:
            raise NasdetError(
                f"must be one of {OUTPUT_SHARING}, got {output_sharing!r}", key="output_sharing"
            )
        super().__init__(list(in_channels), out_channels, num_outs, **kwargs)
        self.output_sharing = output_sharing
        self.num_backbone_levels = self.backbone_end_level - self.start_level
        if output_sharing == "shared":
            convs = list(self.fpn_convs)
            self.fpn_convs = nn.ModuleList(convs[:1])
            self.extra_fpn_convs = nn.ModuleList(convs[self.num_backbone_levels :])

    def output_conv(self, level: int) -> nn.Module:
        """The conv producing output ``level`` (0-based, extra levels included)."""
        if self.output_sharing == "separate":
            return self.fpn_convs[level]
        if level < self.num_backbone_levels:
            return self.fpn_convs[0]
        return self.extra_fpn_convs[level - self.num_backbone_levels]

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Lateral 1x1, top-down sum, output 3x3 per level, then extra levels.

        Args:
            inputs: One feature map per entry of ``in_channels``.

        Returns:
            ``num_outs`` feature maps with ``out_channels`` channels.
        """
        if len(inputs) != len(self.in_channels):
            raise NasdetError(
                f"got {len(inputs)} feature maps from the backbone, expected "
                f"{len(self.in_channels)}; match the neck to the backbone's "
                "out_indices",
                key="neck.in_channels",
            )
        laterals = [conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [self.output_conv(i)(lat) for i, lat in enumerate(laterals)]
        used = len(outs)
        if self.num_outs > used:
            if not self.add_extra_convs:
                while len(outs) < self.num_outs:
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {
                    "on_input": lambda: inputs[self.backbone_end_level - 1],
                    "on_lateral": lambda: laterals[-1],
                    "on_output": lambda: outs[-1],
                }[self.add_extra_convs]()
                outs.append(self.output_conv(used)(source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.output_conv(i)(x))
        return tuple(outs)
