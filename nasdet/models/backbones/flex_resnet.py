"""A ResNet whose widths, depths and in-stage weight tying are config choices.

Parameter names follow mmdet's ``ResNet`` (and torchvision's): ``conv1``, ``bn1``,
``layer{s}.{j}.conv{1,2,3}``, ``layer{s}.{j}.bn{1,2,3}``, ``layer{s}.0.downsample.{0,1}``
(``gn`` instead of ``bn`` with GroupNorm), so ResNet checkpoints map by name; with
other widths they are loaded by slicing (see :class:`FlexResNet`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModule, constant_init
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasdet.errors import NasdetError
from nasdet.models.transfer.loading import check_state_fills
from nasdet.models.utils.make_divisible import make_divisible
from nasdet.models.utils.sliced_state_dict import SlicedLoadResult, load_sliced_state_dict
from nasdet.utils.checkpoint import read_state_dict


class _FlexBlock(BaseModule):
    """Common part of the residual blocks: norms looked up by name at call time.

    ``forward`` runs the block with its own norm layers; ``forward_with_norms`` runs
    its convolutions with norm layers passed in, which is how a :class:`TiedBlock`
    with per-use norms reuses the convolutions.
    """

    norm_names: tuple[str, ...]
    norm_channels: tuple[int, ...]
    downsample: nn.Module | None

    def _add_layers(
        self, convs: list[nn.Module], norm_cfg: dict, downsample: nn.Module | None
    ) -> None:
        """Register ``conv{i}`` and its norm (``bn{i}``/``gn{i}``) in mmdet's order."""
        names = []
        for i, (conv, ch) in enumerate(zip(convs, self.norm_channels, strict=True), start=1):
            self.add_module(f"conv{i}", conv)
            name, norm = build_norm_layer(norm_cfg, ch, postfix=i)
            self.add_module(name, norm)
            names.append(name)
        self.norm_names = tuple(names)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def norms(self) -> tuple[nn.Module, ...]:
        """The block's norm layers, in order (``bn1``, ``bn2``[, ``bn3``])."""
        return tuple(getattr(self, name) for name in self.norm_names)

    def _residual(self, x: Tensor, norms: Sequence[nn.Module]) -> Tensor:
        raise NotImplementedError

    def forward_with_norms(self, x: Tensor, norms: Sequence[nn.Module]) -> Tensor:
        """Run the block with the given norm layers.

        Args:
            x: Input feature map.
            norms: One norm layer per entry of ``norm_names``.

        Returns:
            ``relu(residual(x) + shortcut(x))``.
        """

        def inner(inp: Tensor) -> Tensor:
            out = self._residual(inp, norms)
            identity = inp if self.downsample is None else self.downsample(inp)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(inner, x, use_reentrant=False)
        else:
            out = inner(x)
        return self.relu(out)

    def forward(self, x: Tensor) -> Tensor:
        """Run the block with its own norm layers."""
        return self.forward_with_norms(x, self.norms())


class FlexBasicBlock(_FlexBlock):
    """Two 3x3 convolutions; ``mid_channels`` is the width between them.

    Args:
        in_channels: Input channels.
        mid_channels: Output channels of ``conv1`` (``out_channels`` in a standard ResNet).
        out_channels: Output channels of the block.
        stride: Stride of ``conv1``.
        dilation: Dilation of ``conv1``.
        downsample: Shortcut projection, or None for the identity.
        style: Unused (kept for the same signature as :class:`FlexBottleneck`).
        with_cp: Use gradient checkpointing.
        conv_cfg: mmcv conv config.
        norm_cfg: mmcv norm config.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        with_cp: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        norm_cfg = norm_cfg if norm_cfg is not None else dict(type="BN")
        self.with_cp = with_cp
        self.norm_channels = (mid_channels, out_channels)
        convs = [
            build_conv_layer(
                conv_cfg,
                in_channels,
                mid_channels,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            build_conv_layer(conv_cfg, mid_channels, out_channels, 3, padding=1, bias=False),
        ]
        self._add_layers(convs, norm_cfg, downsample)

    def _residual(self, x: Tensor, norms: Sequence[nn.Module]) -> Tensor:
        out = self.relu(norms[0](self.conv1(x)))
        return norms[1](self.conv2(out))


class FlexBottleneck(_FlexBlock):
    """1x1 -> 3x3 -> 1x1 bottleneck with free mid and output widths.

    Args:
        in_channels: Input channels.
        mid_channels: Width of the 1x1 reduction and the 3x3 conv ("planes").
        out_channels: Output channels ("planes * expansion" in a standard ResNet).
        stride: Stride of the block (on the 3x3 conv for ``'pytorch'`` style, on the
            first 1x1 for ``'caffe'``).
        dilation: Dilation of the 3x3 conv.
        downsample: Shortcut projection, or None for the identity.
        style: ``'pytorch'`` or ``'caffe'``.
        with_cp: Use gradient checkpointing.
        conv_cfg: mmcv conv config.
        norm_cfg: mmcv norm config.
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        with_cp: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        norm_cfg = norm_cfg if norm_cfg is not None else dict(type="BN")
        s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
        self.with_cp = with_cp
        self.norm_channels = (mid_channels, mid_channels, out_channels)
        convs = [
            build_conv_layer(conv_cfg, in_channels, mid_channels, 1, stride=s1, bias=False),
            build_conv_layer(
                conv_cfg,
                mid_channels,
                mid_channels,
                3,
                stride=s2,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            build_conv_layer(conv_cfg, mid_channels, out_channels, 1, bias=False),
        ]
        self._add_layers(convs, norm_cfg, downsample)

    def _residual(self, x: Tensor, norms: Sequence[nn.Module]) -> Tensor:
        out = self.relu(norms[0](self.conv1(x)))
        out = self.relu(norms[1](self.conv2(out)))
        return norms[2](self.conv3(out))


class TiedBlock(BaseModule):
    """A later position of a stage that reuses an earlier block's weights.

    The source block is held by reference and *not* registered as a child, so its
    Parameters exist once in ``model.parameters()`` and ``state_dict()``. Forward
    hooks on this module fire for this position only; hooks on the source's
    convolutions fire at every position that uses them.

    Args:
        source: The block whose convolutions (and, with ``norm_cfg=None``, norms)
            this position uses.
        source_name: The source's name in the model, for ``repr``.
        norm_cfg: If given, this position gets its own norm layers (same names and
            widths as the source's); if None, it uses the source's norm layers.
    """

    def __init__(
        self, source: _FlexBlock, source_name: str = "", norm_cfg: dict | None = None
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_source", source)
        self.source_name = source_name
        self.own_norms = norm_cfg is not None
        if norm_cfg is not None:
            for i, (name, ch) in enumerate(
                zip(source.norm_names, source.norm_channels, strict=True), start=1
            ):
                norm_name, norm = build_norm_layer(norm_cfg, ch, postfix=i)
                assert norm_name == name
                self.add_module(name, norm)

    @property
    def source(self) -> _FlexBlock:
        """The block whose weights this position uses."""
        return self._source

    def norms(self) -> tuple[nn.Module, ...]:
        """The norm layers used at this position."""
        if not self.own_norms:
            return self._source.norms()
        return tuple(getattr(self, name) for name in self._source.norm_names)

    def forward(self, x: Tensor) -> Tensor:
        """Run the source block's convolutions with this position's norms."""
        return self._source.forward_with_norms(x, self.norms())

    def extra_repr(self) -> str:
        norms = "own norms" if self.own_norms else "shared norms"
        return f"tied to {self.source_name or type(self._source).__name__}, {norms}"


class FlexResLayer(nn.Sequential):
    """One stage: a first block followed by unique or tied blocks."""

    def block_at(self, position: int) -> _FlexBlock:
        """The block whose weights run at ``position`` (its source when tied)."""
        module = self[position]
        return module.source if isinstance(module, TiedBlock) else module


def tied_source_index(position: int, unique_blocks: int) -> int:
    """Index of the unique block whose weights run at ``position`` of a stage.

    Position 0 is always its own block (it changes resolution and width); the
    later positions cycle through the unique blocks ``1 .. unique_blocks - 1``.

    Args:
        position: Block position in the stage, ``0 <= position < depth``.
        unique_blocks: Distinct blocks in the stage, ``k``.

    Returns:
        ``position`` if ``position < k``, else ``1 + (position - 1) % (k - 1)``.

    Example:
        >>> [tied_source_index(j, 3) for j in range(6)]
        [0, 1, 2, 1, 2, 1]
    """
    if position < unique_blocks:
        return position
    return 1 + (position - 1) % (unique_blocks - 1)


_BLOCKS = {"basic": FlexBasicBlock, "bottleneck": FlexBottleneck}


def _per_stage(value, num_stages: int, key: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * num_stages
    try:
        values = tuple(value)
    except TypeError:
        raise NasdetError(
            f"expected a number or a sequence of {num_stages}, got {value!r}", key=key
        ) from None
    if len(values) != num_stages:
        raise NasdetError(
            f"expected {num_stages} entries (one per stage), got {len(values)}", key=key
        )
    return values


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NasdetError(f"must be a positive integer, got {value!r}", key=key)
    return value


def _check_out_indices(out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
    out = tuple(out_indices)
    if not out or any(not 0 <= i < num_stages for i in out):
        raise NasdetError(
            f"entries must be stage indices in [0, {num_stages - 1}], got {out}",
            key="out_indices",
        )
    return out


@MODELS.register_module()
class FlexResNet(BaseModule):
    """ResNet backbone with configurable widths, depths and weight-tied blocks.

    **Architecture.** ``depth`` (18/34/50/101/152) picks the block type and the
    per-stage depths of the standard ResNet; otherwise give ``block`` and ``depths``.
    Widths are the output channels of each stage (``widths``) and, inside each block,
    the channels after the first conv (``mid_widths``; the bottleneck width). Either
    give them as absolute numbers, or leave them None to get
    ``make_divisible(base * width_multipliers[i], divisor)`` with the standard bases
    (basic: 64, 128, 256, 512; bottleneck: 256, 512, 1024, 2048). Mid widths default to
    ``make_divisible(widths[i] / expansion, divisor)`` (expansion 4 for bottleneck,
    1 for basic). The stem has ``stem_channels`` (default
    ``make_divisible(64 * width_multipliers[0], divisor)``, i.e. 64 without
    multipliers). With no width argument at all, the standard ResNet is built, with
    the same parameter names and shapes as mmdet's ``ResNet(depth=...)``.

    **Weight tying.** ``unique_blocks[i] = k`` gives stage ``i`` (of depth ``d``) only
    ``k`` distinct blocks: position 0 keeps its own block (it changes resolution and
    width), positions ``1 .. k-1`` have their own blocks, and every later position
    ``j >= k`` runs block ``1 + (j - 1) % (k - 1)`` through a :class:`TiedBlock` that
    holds the *same* module (its Parameters appear once in ``parameters()`` and
    ``state_dict()``). ``k`` must satisfy ``2 <= k <= d`` when ``d >= 2``. With
    ``tie_norm=True`` (default) the norm layers are tied too (the whole block is
    reused, so it saves ``(d - k)`` blocks' parameters); with ``tie_norm=False`` only the
    convolutions are tied and each position keeps its own norm layers (named
    ``layer{s}.{j}.bn*`` as in a ResNet), saving ``(d - k)`` blocks' conv parameters.

    **Pretrained weights.** ``init_cfg=dict(type='Pretrained', checkpoint=PATH,
    prefix=None)`` loads a ResNet-style state dict with
    :func:`~nasdet.models.utils.load_sliced_state_dict`: equal shapes are copied,
    larger checkpoint tensors are cut to their leading slice (so a narrower
    FlexResNet gets the first channels of every layer), and a model tensor larger
    than the checkpoint's raises :class:`~nasdet.errors.NasdetError` naming the key
    and both shapes (no zero-padding). Tied positions own no convolutions, so their
    checkpoint convs are reported as unexpected keys and a tied block is initialised
    from its first use. Missing and unexpected keys are logged as warnings.

    Args:
        depth: Standard ResNet depth; sets ``block`` and ``depths``.
        block: ``'basic'`` or ``'bottleneck'`` when ``depth`` is None.
        depths: Blocks per stage when ``depth`` is None.
        widths: Absolute output channels per stage.
        mid_widths: Absolute channels after each block's first conv, per stage.
        width_multipliers: A number or one per stage, multiplying the base widths
            (only when ``widths`` is None).
        expansion: ``widths[i] / mid_widths[i]`` used when ``mid_widths`` is None.
        stem_channels: Output channels of the 7x7 stem conv.
        divisor: Widths derived from multipliers or expansion are rounded to
            multiples of this (see :func:`~nasdet.models.utils.make_divisible`).
        unique_blocks: Distinct blocks per stage (None entries or None: no tying).
        tie_norm: Tie norm layers along with convolutions in tied blocks.
        in_channels: Image channels.
        strides: Stride of each stage's first block (default ``(1, 2, 2, ...)``).
        dilations: Dilation of each stage (default all 1).
        out_indices: Stages whose outputs are returned.
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'``.
        frozen_stages: Freeze the stem (0) and stages ``1..frozen_stages``; -1 freezes
            nothing.
        conv_cfg: mmcv conv config.
        norm_cfg: mmcv norm config (``BN``, ``SyncBN``, ``GN``, ...).
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing in blocks.
        zero_init_residual: Zero the last norm of every block (and tied position with
            its own norms) when not loading pretrained weights.
        init_cfg: mmengine init config; default Kaiming for convs and 1 for norms.

    Example:
        >>> import torch
        >>> net = FlexResNet(depth=18, width_multipliers=0.5, unique_blocks=(2, 2, 2, 2))
        >>> net.stage_channels
        (32, 64, 128, 256)
        >>> [tuple(o.shape) for o in net(torch.rand(1, 3, 64, 64))][-1]
        (1, 256, 2, 2)
    """

    arch_settings = {
        18: ("basic", (2, 2, 2, 2)),
        34: ("basic", (3, 4, 6, 3)),
        50: ("bottleneck", (3, 4, 6, 3)),
        101: ("bottleneck", (3, 4, 23, 3)),
        152: ("bottleneck", (3, 8, 36, 3)),
    }
    base_widths = {"basic": 64, "bottleneck": 256}
    default_expansion = {"basic": 1.0, "bottleneck": 4.0}

    def __init__(
        self,
        depth: int | None = None,
        block: str | None = None,
        depths: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        mid_widths: Sequence[int] | None = None,
        width_multipliers: float | Sequence[float] | None = None,
        expansion: float | None = None,
        stem_channels: int | None = None,
        divisor: int = 8,
        unique_blocks: Sequence[int | None] | None = None,
        tie_norm: bool = True,
        in_channels: int = 3,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: str = "pytorch",
        frozen_stages: int = -1,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        norm_eval: bool = True,
        with_cp: bool = False,
        zero_init_residual: bool = True,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        if init_cfg is None:
            init_cfg = [
                dict(type="Kaiming", layer="Conv2d"),
                dict(type="Constant", val=1, layer=["_BatchNorm", "GroupNorm"]),
            ]
        super().__init__(init_cfg)
        block, depths = self._resolve_arch(depth, block, depths)
        n = len(depths)
        self.block_type = block
        self.depths = depths
        self.divisor = divisor
        self.widths, self.mid_widths, self.stem_channels = self._resolve_widths(
            block, n, widths, mid_widths, width_multipliers, expansion, stem_channels, divisor
        )
        self.unique_blocks = self._resolve_tying(unique_blocks, depths)
        self.tie_norm = tie_norm
        self.strides = tuple(strides) if strides is not None else (1,) + (2,) * (n - 1)
        self.dilations = tuple(dilations) if dilations is not None else (1,) * n
        for key, value in (("strides", self.strides), ("dilations", self.dilations)):
            if len(value) != n:
                raise NasdetError(
                    f"expected {n} entries (one per stage), got {len(value)}", key=key
                )
        self.out_indices = _check_out_indices(out_indices, n)
        if style not in ("pytorch", "caffe"):
            raise NasdetError(f"must be 'pytorch' or 'caffe', got {style!r}", key="style")
        if not -1 <= frozen_stages <= n:
            raise NasdetError(f"must be in [-1, {n}], got {frozen_stages}", key="frozen_stages")
        self.style = style
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg if norm_cfg is not None else dict(type="BN", requires_grad=True)
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual

        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, self.stem_channels, 7, stride=2, padding=3, bias=False
        )
        self.norm1_name, norm1 = build_norm_layer(self.norm_cfg, self.stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers: list[str] = []
        inplanes = self.stem_channels
        for i in range(n):
            name = f"layer{i + 1}"
            self.add_module(name, self._make_stage(i, name, inplanes))
            self.res_layers.append(name)
            inplanes = self.widths[i]
        self._freeze_stages()

    # ------------------------------------------------------------------ construction
    @classmethod
    def _resolve_arch(cls, depth, block, depths) -> tuple[str, tuple[int, ...]]:
        if depth is not None:
            if depth not in cls.arch_settings:
                raise NasdetError(
                    f"must be one of {sorted(cls.arch_settings)}, got {depth!r}", key="depth"
                )
            if block is not None or depths is not None:
                raise NasdetError("give either depth or block+depths, not both", key="depth")
            block, depths = cls.arch_settings[depth]
        if block not in _BLOCKS:
            raise NasdetError(
                f"must be 'basic' or 'bottleneck' (or set depth), got {block!r}", key="block"
            )
        if depths is None:
            raise NasdetError("give depths (blocks per stage) or depth", key="depths")
        depths = tuple(_positive_int(d, "depths") for d in depths)
        if not depths:
            raise NasdetError("need at least one stage", key="depths")
        return block, depths

    @classmethod
    def _resolve_widths(
        cls, block, n, widths, mid_widths, width_multipliers, expansion, stem_channels, divisor
    ):
        if widths is not None and width_multipliers is not None:
            raise NasdetError(
                "give either widths (absolute) or width_multipliers, not both",
                key="width_multipliers",
            )
        mults = (
            _per_stage(width_multipliers, n, "width_multipliers")
            if width_multipliers is not None
            else None
        )
        if mults is not None and any(not m > 0 for m in mults):
            raise NasdetError(f"must be positive, got {mults}", key="width_multipliers")
        if widths is not None:
            widths = tuple(_positive_int(w, "widths") for w in _per_stage(widths, n, "widths"))
        else:
            base = cls.base_widths[block]
            widths = tuple(
                base * 2**i if mults is None else make_divisible(base * 2**i * mults[i], divisor)
                for i in range(n)
            )
        if mid_widths is not None:
            if expansion is not None:
                raise NasdetError("give either mid_widths or expansion, not both", key="expansion")
            mid_widths = tuple(
                _positive_int(w, "mid_widths") for w in _per_stage(mid_widths, n, "mid_widths")
            )
        else:
            expansion = cls.default_expansion[block] if expansion is None else expansion
            if not expansion > 0:
                raise NasdetError(f"must be positive, got {expansion!r}", key="expansion")
            mid_widths = tuple(make_divisible(w / expansion, divisor) for w in widths)
        if stem_channels is None:
            stem_channels = 64 if mults is None else make_divisible(64 * mults[0], divisor)
        stem_channels = _positive_int(stem_channels, "stem_channels")
        return widths, mid_widths, stem_channels

    @staticmethod
    def _resolve_tying(unique_blocks, depths) -> tuple[int, ...]:
        n = len(depths)
        if unique_blocks is None:
            return depths
        values = _per_stage(unique_blocks, n, "unique_blocks")
        out = []
        for i, (k, d) in enumerate(zip(values, depths, strict=True)):
            if k is None:
                k = d
            _positive_int(k, f"unique_blocks[{i}]")
            if k > d or (d >= 2 and k < 2):
                raise NasdetError(
                    f"stage {i} has {d} blocks; unique_blocks must be in [{min(d, 2)}, {d}] "
                    f"(the first block is never reused), got {k}",
                    key=f"unique_blocks[{i}]",
                )
            out.append(k)
        return tuple(out)

    def _make_stage(self, i: int, name: str, inplanes: int) -> FlexResLayer:
        block_cls = _BLOCKS[self.block_type]
        out, mid, stride = self.widths[i], self.mid_widths[i], self.strides[i]
        common = dict(
            dilation=self.dilations[i],
            style=self.style,
            with_cp=self.with_cp,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
        )
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                build_conv_layer(self.conv_cfg, inplanes, out, 1, stride=stride, bias=False),
                build_norm_layer(self.norm_cfg, out)[1],
            )
        blocks: list[nn.Module] = [
            block_cls(inplanes, mid, out, stride=stride, downsample=downsample, **common)
        ]
        k = self.unique_blocks[i]
        for j in range(1, self.depths[i]):
            src = tied_source_index(j, k)
            if src == j:
                blocks.append(block_cls(out, mid, out, stride=1, **common))
            else:
                blocks.append(
                    TiedBlock(
                        blocks[src],
                        source_name=f"{name}.{src}",
                        norm_cfg=None if self.tie_norm else self.norm_cfg,
                    )
                )
        return FlexResLayer(*blocks)

    # ------------------------------------------------------------------ properties
    @property
    def norm1(self) -> nn.Module:
        """The stem's norm layer."""
        return getattr(self, self.norm1_name)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of the returned stages (a neck's ``in_channels``)."""
        return tuple(self.widths[i] for i in self.out_indices)

    @classmethod
    def stage_channels_for(cls, **kwargs) -> tuple[int, ...]:
        """``FlexResNet(**kwargs).stage_channels`` without building the network.

        Args:
            **kwargs: FlexResNet arguments, e.g. a backbone config dict (its ``type``
                key is ignored), for deriving a neck's ``in_channels``.

        Returns:
            Output channels of the stages in ``out_indices``.

        Example:
            >>> FlexResNet.stage_channels_for(type="FlexResNet", depth=50, out_indices=(1, 2, 3))
            (512, 1024, 2048)
        """
        kwargs = {k: v for k, v in kwargs.items() if k != "type"}
        try:
            bound = inspect.signature(cls.__init__).bind(None, **kwargs)
        except TypeError as err:
            raise NasdetError(str(err), key="backbone") from None
        bound.apply_defaults()
        a = bound.arguments
        block, depths = cls._resolve_arch(a["depth"], a["block"], a["depths"])
        widths = cls._resolve_widths(
            block,
            len(depths),
            a["widths"],
            a["mid_widths"],
            a["width_multipliers"],
            a["expansion"],
            a["stem_channels"],
            a["divisor"],
        )[0]
        return tuple(widths[i] for i in _check_out_indices(a["out_indices"], len(depths)))

    @property
    def num_stages(self) -> int:
        """Number of residual stages."""
        return len(self.depths)

    def stage_blocks(self, stage: int) -> list[nn.Module]:
        """The block module that runs at each position of ``stage`` (0-based).

        Tied positions return their source block, so ``stage_blocks(s)[j] is
        stage_blocks(s)[tied_source_index(j, k)]``.
        """
        layer: FlexResLayer = getattr(self, self.res_layers[stage])
        return [layer.block_at(j) for j in range(len(layer))]

    # ------------------------------------------------------------------ behaviour
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return the feature maps of the stages in ``out_indices``."""
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.norm1.eval()
            for m in (self.conv1, self.norm1):
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            layer = getattr(self, f"layer{i}")
            layer.eval()
            for p in layer.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> FlexResNet:
        """Set train mode, keeping frozen stages and (with ``norm_eval``) BN in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        """Initialise; ``Pretrained`` init configs are loaded with slicing."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        cfgs = [c for c in cfgs if c]
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        if not pretrained:
            super().init_weights()
            if self.zero_init_residual:
                for m in self.modules():
                    if isinstance(m, _FlexBlock) or (isinstance(m, TiedBlock) and m.own_norms):
                        for norm in m.norms()[-1:]:
                            constant_init(norm, 0)
            return
        original = self.init_cfg
        self.init_cfg = [c for c in cfgs if c.get("type") != "Pretrained"] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        for cfg in pretrained:
            self.load_pretrained(
                cfg["checkpoint"],
                prefix=cfg.get("prefix"),
                map_location=cfg.get("map_location", "cpu"),
            )

    def load_pretrained(
        self, checkpoint: str, prefix: str | None = None, map_location: str = "cpu"
    ) -> SlicedLoadResult:
        """Load a (possibly wider) ResNet checkpoint by the slicing rule.

        Unlike MMDetection's ``Pretrained`` init, which only logs what did not fit, a
        checkpoint that would leave the backbone mostly random is refused before
        anything is copied (:func:`~nasdet.models.transfer.loading.check_state_fills`):
        none of its weights present, convolutions of another kernel size, or less than
        half of the backbone's weight elements present. Narrower tensors are refused by
        :func:`~nasdet.models.utils.load_sliced_state_dict`.

        Args:
            checkpoint: Path, or a URL understood by mmengine's ``CheckpointLoader``.
            prefix: Only keys starting with this (e.g. ``'backbone.'``), stripped.
            map_location: Where to load tensors.

        Returns:
            The :class:`~nasdet.models.utils.SlicedLoadResult`.

        Raises:
            NasdetError: naming the checkpoint file and ``init_cfg.checkpoint`` (or
                ``init_cfg.prefix``).
        """
        key = "init_cfg.checkpoint"
        state = read_state_dict(checkpoint, prefix=prefix, key=key, prefix_key="init_cfg.prefix",
                                map_location=map_location)
        check_state_fills(self, state, source=checkpoint, key=key)
        try:
            result = load_sliced_state_dict(self, state, source=checkpoint)
        except NasdetError as exc:  # a tensor narrower than the backbone's: name the option
            raise NasdetError(f"{exc.key}: {exc.message}", file=checkpoint, key=key) from None
        for label, keys in (
            ("missing", [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]),
            ("unexpected", result.unexpected_keys),
            ("sliced", result.sliced_keys),
        ):
            if keys:
                print_log(
                    f"FlexResNet pretrained {checkpoint}: {len(keys)} {label} keys: "
                    f"{', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}",
                    logger="current",
                    level=logging.WARNING if label != "sliced" else logging.INFO,
                )
        return result
