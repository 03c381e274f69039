"""First-class targets: what a dimension's ``target`` names and how it edits a config.

Widths (channel counts are checked against the dimension's ``divisor``):

================================== ========== ==================================================
target                             per stage  edits
================================== ========== ==================================================
``backbone.widths``                yes        FlexResNet ``widths`` (stage output channels)
``backbone.width_multipliers``     yes        ``widths[i] = make_divisible(base_widths[i] * m_i,
                                              divisor)`` with the base config's stage widths
``backbone.mid_widths``            yes        FlexResNet ``mid_widths`` (bottleneck widths)
``backbone.depths``                yes        FlexResNet ``depths`` (blocks per stage)
``backbone.stem_channels``         no         FlexResNet ``stem_channels``
``neck.out_channels``              no         the FPN width and everything that must follow it:
                                              ``rpn_head.in_channels``, ``bbox_head.in_channels``,
                                              ``roi_head.{bbox,mask}_roi_extractor.out_channels``,
                                              ``roi_head.{bbox,mask}_head.in_channels``
``rpn_head.feat_channels``         no         RPN conv width
``bbox_head.feat_channels``        no         one-stage head tower width (RetinaNet, FCOS, ...)
``roi_head.bbox_head.fc_out_channels`` no     width of the RoI box head's fully connected layers
================================== ========== ==================================================

Sharing (the module is swapped for its nasdet counterpart whenever the space has such a
dimension, so all candidates of a space have the same module types):

================================== ========== ==================================================
``backbone.unique_blocks``         yes        distinct blocks per stage (FlexResNet weight tying;
                                              ``null``: no tying)
``backbone.tie_norm``              no         tie norm layers along with convolutions
``neck.output_sharing``            no         ``separate``/``shared`` (``FPN`` → ``SharingFPN``)
``rpn_head.level_sharing``         no         ``shared``/``shared_tower``/``per_level``
                                              (``RPNHead`` → ``SharingRPNHead``)
``bbox_head.level_sharing``        no         as above (``RetinaHead`` → ``SharingRetinaHead``)
``bbox_head.cls_reg_sharing``      no         ``separate``/``shared`` (``RetinaHead`` →
                                              ``SharingRetinaHead``)
================================== ========== ==================================================

Transfer: ``transfer`` (a categorical over strategy names, with an optional
``checkpoint``) and ``transfer.<param>`` (a keyword argument of the strategy), applied
last through ``nasdet.transfer.apply_transfer(cfg, strategy, checkpoint=...,
**params)``.

Any backbone target turns an mmdet ``ResNet`` (or ``ResNeXt`` with ``groups=1``) backbone
into a ``FlexResNet`` of the same layout (same parameter names, so ``init_cfg``
checkpoints still load; :func:`resnet_to_flex` lists the options converted, e.g.
``base_channels`` and ``stem_channels``, and those refused), and makes
``neck.in_channels`` follow the backbone's stage widths
(:meth:`~nasdet.models.FlexResNet.stage_channels_for`).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasdet.errors import NasdetError
from nasdet.space.schema import KINDS, Dimension, error_at

__all__ = [
    "FOLLOWERS",
    "TARGETS",
    "BackboneLayout",
    "Target",
    "apply_targets",
    "backbone_layout",
    "resnet_to_flex",
]

_LEVEL = ("shared", "shared_tower", "per_level")
_CLS_REG = ("separate", "shared")
_OUTPUT = ("separate", "shared")
_NUMERIC = ("int", "float", "logfloat", "categorical")
_INT = ("int", "categorical")


@dataclass(frozen=True)
class Target:
    """A first-class target.

    Args:
        name: The name used as ``target:`` in a space file.
        module: Dotted path of the module dict it edits under ``cfg.model``.
        doc: One line for listings.
        per_stage: One value per backbone stage.
        channels: Values are channel counts (positive integers, multiples of ``divisor``).
        kinds: Dimension kinds allowed.
        allowed: The only values allowed (sharing patterns, booleans), or None.
        integer: Values must be integers.
    """

    name: str
    module: str
    doc: str
    per_stage: bool = False
    channels: bool = False
    kinds: tuple[str, ...] = KINDS
    allowed: tuple[Any, ...] | None = None
    integer: bool = False

    @property
    def is_backbone(self) -> bool:
        """Whether the target edits the backbone."""
        return self.module == "backbone"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "backbone.widths",
            "backbone",
            "stage output channels",
            per_stage=True,
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "backbone.width_multipliers",
            "backbone",
            "multipliers of the base stage widths",
            per_stage=True,
            kinds=_NUMERIC,
        ),
        Target(
            "backbone.mid_widths",
            "backbone",
            "bottleneck (first conv) widths per stage",
            per_stage=True,
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "backbone.depths",
            "backbone",
            "blocks per stage",
            per_stage=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "backbone.unique_blocks",
            "backbone",
            "distinct (untied) blocks per stage",
            per_stage=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "backbone.stem_channels",
            "backbone",
            "stem conv width",
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "backbone.tie_norm",
            "backbone",
            "tie norm layers of tied blocks",
            kinds=("categorical",),
            allowed=(True, False),
        ),
        Target(
            "neck.out_channels",
            "neck",
            "FPN width (heads follow)",
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "neck.output_sharing",
            "neck",
            "FPN output convs shared across levels",
            kinds=("categorical",),
            allowed=_OUTPUT,
        ),
        Target(
            "rpn_head.feat_channels",
            "rpn_head",
            "RPN conv width",
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "rpn_head.level_sharing",
            "rpn_head",
            "RPN sharing across levels",
            kinds=("categorical",),
            allowed=_LEVEL,
        ),
        Target(
            "bbox_head.feat_channels",
            "bbox_head",
            "dense head tower width",
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target(
            "bbox_head.level_sharing",
            "bbox_head",
            "dense head sharing across levels",
            kinds=("categorical",),
            allowed=_LEVEL,
        ),
        Target(
            "bbox_head.cls_reg_sharing",
            "bbox_head",
            "one tower for cls and reg",
            kinds=("categorical",),
            allowed=_CLS_REG,
        ),
        Target(
            "roi_head.bbox_head.fc_out_channels",
            "roi_head.bbox_head",
            "RoI box head fc width",
            channels=True,
            kinds=_INT,
            integer=True,
        ),
        Target("transfer", "", "transfer strategy", kinds=("categorical",)),
    )
}

#: Config keys (under ``model``) that must equal the FPN width.
FOLLOWERS = (
    "neck.out_channels",
    "rpn_head.in_channels",
    "bbox_head.in_channels",
    "roi_head.bbox_roi_extractor.out_channels",
    "roi_head.bbox_head.in_channels",
    "roi_head.mask_roi_extractor.out_channels",
    "roi_head.mask_head.in_channels",
)

#: module path -> (mmdet type, nasdet type) swapped in for sharing targets.
_SWAPS = {
    "neck": ("FPN", "SharingFPN"),
    "rpn_head": ("RPNHead", "SharingRPNHead"),
    "bbox_head": ("RetinaHead", "SharingRetinaHead"),
}
_SHARING = {
    "neck.output_sharing",
    "rpn_head.level_sharing",
    "bbox_head.level_sharing",
    "bbox_head.cls_reg_sharing",
}
_FC_HEADS = ("ConvFCBBoxHead", "Shared2FCBBoxHead", "Shared4Conv1FCBBoxHead")


def lookup_target(name: str) -> Target | None:
    """The :class:`Target` for ``name`` (``transfer.<param>`` included), or None."""
    if name.startswith("transfer.") and len(name) > len("transfer."):
        return Target(name, "", "transfer strategy parameter")
    return TARGETS.get(name)


def type_name(module: Mapping[str, Any]) -> str:
    """A module dict's ``type`` without an ``mmdet.`` scope prefix."""
    t = module.get("type", "")
    return t.split(".", 1)[1] if isinstance(t, str) and t.startswith("mmdet.") else str(t)


def is_mapping(node: Any) -> bool:
    """A dict-like config node (``dict``, ``ConfigDict`` or an mmengine ``Config``)."""
    return isinstance(node, Mapping) or (
        hasattr(node, "keys")
        and hasattr(node, "__getitem__")
        and not isinstance(node, (list, tuple, str))
    )


def get_path(root: Any, path: str) -> Any:
    """``root`` followed along a dotted path (numbers index lists); None if absent."""
    node = root
    for part in path.split(".") if path else []:
        if is_mapping(node):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# ---------------------------------------------------------------------------- backbone
#: Options of mmdet's ResNet family that FlexResNet cannot express: option -> (the
#: value that is accepted, why another value is refused).
_RESNET_REFUSED: dict[str, tuple[Any, str]] = {
    "deep_stem": (
        False,
        "FlexResNet has one 7x7 stem conv (conv1, bn1), not three 3x3 convs (stem.0-8)",
    ),
    "avg_down": (
        False,
        "FlexResNet shortcuts are strided 1x1 convs (downsample.0/1), not AvgPool + "
        "1x1 conv (downsample.1/2)",
    ),
    "dcn": (None, "FlexResNet has no deformable convolutions"),
    "stage_with_dcn": (None, "FlexResNet has no deformable convolutions"),
    "plugins": (None, "FlexResNet blocks take no plugin layers"),
    "pretrained": (
        None,
        "deprecated in mmdet; give init_cfg=dict(type='Pretrained', checkpoint=...)",
    ),
    "groups": (1, "FlexResNet's 3x3 convs are dense, not grouped"),
}
_RESNET_PASS = (
    "depth",
    "in_channels",
    "strides",
    "dilations",
    "out_indices",
    "style",
    "frozen_stages",
    "conv_cfg",
    "norm_cfg",
    "norm_eval",
    "with_cp",
    "zero_init_residual",
    "init_cfg",
)
#: mmdet's ResNet depths per backbone type (ResNeXt has bottleneck depths only).
_RESNET_DEPTHS = {"ResNet": (18, 34, 50, 101, 152), "ResNeXt": (50, 101, 152)}
_RESNET_TYPES = ("ResNet", "ResNeXt", "ResNetV1d")


def _refused(key: str, value: Any) -> bool:
    accepted = _RESNET_REFUSED[key][0]
    if key == "stage_with_dcn":
        return bool(any(value or ()))
    if isinstance(accepted, bool):
        return bool(value) != accepted
    return value != accepted


def _channel_option(value: Any, key: str, file: str | Path | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NasdetError(
            f"must be a positive integer, got {value!r}", file=file, key=f"model.backbone.{key}"
        )
    return value


def resnet_to_flex(backbone: Mapping[str, Any], *, file: str | Path | None = None) -> dict:
    """An mmdet ``ResNet`` (or ``ResNeXt``) dict as a ``FlexResNet`` dict of the same layout.

    The result builds a network with the same parameter names and shapes, hence the
    same parameter count and, given the same weights, the same outputs:

    ========================== =========================================================
    mmdet option               FlexResNet dict
    ========================== =========================================================
    ``depth``                  ``depth`` (ResNet: 18-152; ResNeXt: 50, 101, 152)
    ``num_stages < 4``         ``block`` + the first ``num_stages`` ``depths``
    ``base_channels=b != 64``  ``widths[i] = b * 2**i * expansion`` (1 basic, 4
                               bottleneck), mid widths ``b * 2**i`` by FlexResNet's
                               default rule; ``divisor = gcd(b, 8)`` when ``b`` is not
                               a multiple of 8, so no width is rounded
    ``stem_channels``          ``stem_channels`` (mmdet's default: ``base_channels``)
    ``groups=1`` (ResNeXt)     dropped; ``base_width`` is then unused by mmdet too
    ========================== =========================================================

    ``in_channels``, ``strides``, ``dilations``, ``out_indices``, ``style``,
    ``frozen_stages``, ``conv_cfg``, ``norm_cfg``, ``norm_eval``, ``with_cp``,
    ``zero_init_residual`` and ``init_cfg`` pass through unchanged.

    Refused (raise :class:`~nasdet.errors.NasdetError` naming the option), because
    FlexResNet has no such layers:

    ========================== =========================================================
    ``deep_stem=True``         three 3x3 stem convs (``stem.0-8``) instead of ``conv1``
    ``avg_down=True``          AvgPool + 1x1 conv shortcuts (``downsample.1/2``)
    type ``ResNetV1d``         is ResNet with ``deep_stem=True, avg_down=True``
    ``dcn``/``stage_with_dcn`` deformable convolutions
    ``plugins``                plugin layers inside blocks
    ``groups > 1`` (ResNeXt)   grouped 3x3 convolutions
    ``pretrained``             deprecated by mmdet; use ``init_cfg``
    ========================== =========================================================

    Args:
        backbone: The ``model.backbone`` dict (type ``ResNet`` or ``ResNeXt``).
        file: The config file, for messages.

    Returns:
        A new FlexResNet dict (FlexResNet names its parameters as ResNet does).

    Raises:
        NasdetError: a refused option or value (one line naming ``model.backbone.KEY``).

    Example:
        >>> flex = resnet_to_flex(dict(type="ResNet", depth=50, base_channels=32))
        >>> flex["widths"], flex["stem_channels"]
        ([128, 256, 512, 1024], 32)
    """
    from nasdet.models import FlexResNet

    kind = type_name(backbone)
    if kind == "ResNetV1d":
        raise NasdetError(
            "ResNetV1d (ResNet with deep_stem=True, avg_down=True) has no FlexResNet "
            "counterpart (FlexResNet has one 7x7 stem conv and strided 1x1 conv "
            "shortcuts); searched backbones need FlexResNet",
            file=file,
            key="model.backbone.type",
        )
    if kind not in _RESNET_DEPTHS:
        raise NasdetError(
            f"expected one of {list(_RESNET_DEPTHS)}, got {kind!r}",
            file=file,
            key="model.backbone.type",
        )
    out: dict[str, Any] = {"type": "FlexResNet"}
    for key, value in backbone.items():
        if key in ("type", "_scope_", "num_stages", "base_channels", "stem_channels"):
            continue
        if kind == "ResNeXt" and key == "base_width":
            continue  # used only with groups > 1, which is refused
        if key in _RESNET_REFUSED and (kind == "ResNeXt" or key != "groups"):
            if _refused(key, value):
                raise NasdetError(
                    f"{kind} option {key}={value!r} has no FlexResNet counterpart "
                    f"({_RESNET_REFUSED[key][1]}); searched backbones need FlexResNet",
                    file=file,
                    key=f"model.backbone.{key}",
                )
            continue
        if key not in _RESNET_PASS:
            raise NasdetError(f"unknown {kind} option", file=file, key=f"model.backbone.{key}")
        out[key] = value
    depth = backbone.get("depth")
    if depth not in _RESNET_DEPTHS[kind]:
        raise NasdetError(
            f"unsupported {kind} depth {depth!r} (one of {list(_RESNET_DEPTHS[kind])})",
            file=file,
            key="model.backbone.depth",
        )
    block, depths = FlexResNet.arch_settings[depth]
    num_stages = backbone.get("num_stages", 4)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 1 <= num_stages <= 4:
        raise NasdetError(
            f"must be an integer in [1, 4], got {num_stages!r}",
            file=file,
            key="model.backbone.num_stages",
        )
    if num_stages != 4:
        out.pop("depth")
        out["block"], out["depths"] = block, list(depths[:num_stages])
    base = _channel_option(backbone.get("base_channels", 64), "base_channels", file)
    stem = backbone.get("stem_channels")
    if stem is not None:
        out["stem_channels"] = _channel_option(stem, "stem_channels", file)
    elif base != 64 or "stem_channels" in backbone:
        out["stem_channels"] = base if base != 64 else None
    if base != 64:
        expansion = int(FlexResNet.default_expansion[block])
        out["widths"] = [base * 2**i * expansion for i in range(num_stages)]
        if base % 8:
            out["divisor"] = math.gcd(base, 8)
    return out


@dataclass(frozen=True)
class BackboneLayout:
    """The resolved layout of a base config's backbone (as a FlexResNet).

    Args:
        block: ``'basic'`` or ``'bottleneck'``.
        depths: Blocks per stage.
        widths: Output channels of every stage.
        stem: Stem width.
        divisor: The backbone's ``divisor``.
        unique_blocks: The base's ``unique_blocks`` per stage (None: untied).
        flex: The backbone as a FlexResNet dict.
    """

    block: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    stem: int
    divisor: int
    unique_blocks: tuple[int | None, ...]
    flex: Mapping[str, Any]

    @property
    def num_stages(self) -> int:
        """Number of residual stages."""
        return len(self.depths)


def _flex_args(flex: Mapping[str, Any]) -> dict[str, Any]:
    from nasdet.models import FlexResNet

    kwargs = {k: v for k, v in flex.items() if k not in ("type", "_scope_")}
    try:
        bound = inspect.signature(FlexResNet.__init__).bind(None, **kwargs)
    except TypeError as exc:
        raise NasdetError(f"not a FlexResNet config: {exc}", key="model.backbone") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def backbone_layout(
    backbone: Mapping[str, Any], *, file: str | Path | None = None
) -> BackboneLayout:
    """Resolve a ``ResNet``/``FlexResNet`` backbone dict without building it.

    Args:
        backbone: ``model.backbone`` of the base config.
        file: The config file, for messages.

    Raises:
        NasdetError: another backbone type, or a FlexResNet config that cannot build.
    """
    from nasdet.models import FlexResNet, make_divisible

    kind = type_name(backbone)
    if kind in _RESNET_TYPES:
        flex = resnet_to_flex(backbone, file=file)
    elif kind == "FlexResNet":
        flex = {k: v for k, v in backbone.items() if k != "_scope_"}
    else:
        raise NasdetError(
            f"backbone targets need a ResNet, ResNeXt or FlexResNet backbone, the base has "
            f"{kind!r}",
            file=file,
            key="model.backbone.type",
        )
    try:
        args = _flex_args(flex)
        depth = args["depth"]
        if depth is not None and depth in FlexResNet.arch_settings:
            block, depths = FlexResNet.arch_settings[depth]
        else:
            block, depths = args["block"], args["depths"]
        depths = tuple(depths or ())
        widths = FlexResNet.stage_channels_for(**{**flex, "out_indices": tuple(range(len(depths)))})
    except NasdetError as exc:
        raise NasdetError(
            exc.message, file=file, key=f"model.backbone.{exc.key}" if exc.key else "model.backbone"
        ) from None
    divisor = int(args["divisor"])
    stem = args["stem_channels"]
    if stem is None:
        mults = args["width_multipliers"]
        m0 = None if mults is None else (mults if isinstance(mults, (int, float)) else mults[0])
        stem = 64 if m0 is None else make_divisible(64 * m0, divisor)
    unique = args["unique_blocks"]
    if unique is None or isinstance(unique, int):
        unique = (unique,) * len(depths)
    return BackboneLayout(
        block=block,
        depths=depths,
        widths=tuple(widths),
        stem=int(stem),
        divisor=divisor,
        unique_blocks=tuple(unique),
        flex=flex,
    )


# ---------------------------------------------------------------------------- checks
def check_target(
    dim: Dimension, target: Target, model: Mapping[str, Any], file: str | Path | None
) -> None:
    """Checks of one dimension against its target and the base model dict.

    Range and divisor checks live here; cross-dimension checks (``unique_blocks`` vs
    ``depths``) in :func:`check_cross`.
    """
    key = dim.key
    if dim.kind not in target.kinds:
        raise error_at(
            f"target {target.name} takes kind {' or '.join(target.kinds)}, not {dim.kind}",
            file,
            f"{key}.kind",
        )
    if target.module:
        module = get_path(model, target.module)
        if module is None:
            raise error_at(
                f"the base config has no model.{target.module} to apply {target.name} to",
                file,
                f"{key}.target",
            )
        if not isinstance(module, Mapping):
            raise error_at(
                f"model.{target.module} is a {type(module).__name__}; "
                f"{target.name} needs one module dict (lists of heads, as in "
                "Cascade R-CNN, are not supported)",
                file,
                f"{key}.target",
            )
        _check_module_type(dim, target, module, model, file)
    for slot in dim.slots:
        for field_name, value in _slot_values(slot):
            sub = f"{key}.{field_name}"
            if target.allowed is not None and not any(
                value is a if isinstance(a, bool) else value == a for a in target.allowed
            ):
                raise error_at(f"must be one of {list(target.allowed)}, got {value!r}", file, sub)
            if target.name == "transfer":
                if not isinstance(value, str) or not value:
                    raise error_at(f"transfer strategies are names, got {value!r}", file, sub)
                continue
            if target.name == "backbone.unique_blocks" and value is None:
                continue
            if target.integer or target.channels:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    and not (isinstance(value, float) and value.is_integer())
                ):
                    raise error_at(f"must be an integer, got {value!r}", file, sub)
                if value < 1:
                    raise error_at(f"must be at least 1, got {value!r}", file, sub)
            if target.name == "backbone.width_multipliers":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise error_at(
                        f"multipliers must be positive numbers, got {value!r}", file, sub
                    )
        if target.channels and dim.divisor and dim.divisor > 1:
            d = dim.divisor
            if slot.kind == "int":
                for field_name, value in (("low", slot.low), ("step", slot.step)):
                    if value % d:
                        raise error_at(
                            f"{value} is not a multiple of the divisor {d}: every width must "
                            f"be (set low and step to multiples of {d}, or divisor: 1)",
                            file,
                            f"{key}.{field_name}",
                        )
            else:
                for field_name, value in _slot_values(slot):
                    if value % d:
                        raise error_at(
                            f"width {value} is not a multiple of the divisor {d}",
                            file,
                            f"{key}.{field_name}",
                        )


def _slot_values(slot) -> list[tuple[str, Any]]:
    if slot.kind == "categorical":
        return [("choices", c) for c in slot.choices]
    out = [("low", slot.low), ("high", slot.high)]
    return out


def _check_module_type(
    dim: Dimension,
    target: Target,
    module: Mapping[str, Any],
    model: Mapping[str, Any],
    file: str | Path | None,
) -> None:
    key = dim.key
    kind = type_name(module)
    if target.name in _SHARING:
        plain, sharing = _SWAPS[target.module]
        if kind not in (plain, sharing):
            raise error_at(
                f"{target.name} needs model.{target.module} of type {plain} or "
                f"{sharing}, the base has {kind!r}",
                file,
                f"{key}.target",
            )
    if target.name.endswith("level_sharing"):
        values = [v for s in dim.slots for _, v in _slot_values(s)]
        strides = get_path(module, "anchor_generator.strides")
        num_outs = get_path(model, "neck.num_outs")
        if (
            any(v != "shared" for v in values)
            and strides is not None
            and num_outs is not None
            and len(strides) != num_outs
        ):
            raise error_at(
                f"per-level modules need as many feature maps as anchor strides: "
                f"model.neck.num_outs is {num_outs}, model.{target.module}.anchor_generator."
                f"strides has {len(strides)}",
                file,
                f"{key}.choices",
            )
    if (
        target.name == "roi_head.bbox_head.fc_out_channels"
        and "fc_out_channels" not in module
        and kind not in _FC_HEADS
    ):
        raise error_at(
            f"model.roi_head.bbox_head ({kind!r}) has no fc_out_channels", file, f"{key}.target"
        )


def _depth_values(depth_dim: Dimension | None, layout: BackboneLayout, stage: int) -> list[int]:
    values = [] if depth_dim is None else [int(v) for v in depth_dim.stage_values_set(stage)]
    if depth_dim is None or depth_dim.condition:
        values.append(layout.depths[stage])
    return sorted(set(values))


def check_cross(
    dims: Sequence[Dimension], layout: BackboneLayout | None, file: str | Path | None
) -> None:
    """Checks across dimensions: ``unique_blocks`` must fit every depth of its stage.

    A stage of depth ``d >= 2`` takes ``2 <= unique_blocks <= d`` (FlexResNet never
    reuses the first block); depth 1 takes 1. The check covers every depth the space
    can give the stage (the base depth too when the ``depths`` dimension is
    conditional), so no sampled combination fails to build.
    """
    by_target = {d.target: d for d in dims if d.target}
    both = [d for d in dims if d.target in ("backbone.widths", "backbone.width_multipliers")]
    if len(both) == 2:
        raise error_at(
            "give backbone.widths or backbone.width_multipliers, not both",
            file,
            f"{both[1].key}.target",
        )
    if layout is None:
        return
    unique_dim = by_target.get("backbone.unique_blocks")
    depth_dim = by_target.get("backbone.depths")
    if unique_dim is None and depth_dim is None:
        return
    for stage in range(layout.num_stages):
        depths = _depth_values(depth_dim, layout, stage)
        if unique_dim is not None:
            uniques = [(v, unique_dim) for v in unique_dim.stage_values_set(stage)]
            if unique_dim.condition:
                uniques.append((layout.unique_blocks[stage], None))
        else:
            uniques = [(layout.unique_blocks[stage], None)]
        for k, source in uniques:
            if k is None:
                continue
            for d in depths:
                if k > d or (d >= 2 and k < 2) or (d == 1 and k != 1):
                    field_name = (
                        "choices"
                        if source is not None and source.kind == "categorical"
                        else ("high" if k > d else "low")
                    )
                    where = (
                        f"{source.key}.{field_name}"
                        if source is not None
                        else f"{depth_dim.key}.low"
                    )
                    raise error_at(
                        f"stage {stage}: unique_blocks {k} cannot build with depth {d} (a "
                        f"stage of depth d takes unique_blocks in [min(d, 2), d]); narrow the "
                        "ranges so every combination fits, or use null for no tying",
                        file,
                        where,
                    )


# ---------------------------------------------------------------------------- apply
def _ensure_custom_imports(cfg: Any) -> None:
    ci = dict(cfg.get("custom_imports") or {})
    imports = list(ci.get("imports") or [])
    if "nasdet.models" not in imports:
        imports.append("nasdet.models")
        cfg.custom_imports = dict(
            imports=imports, allow_failed_imports=ci.get("allow_failed_imports", False)
        )


def apply_targets(
    cfg: Any,
    values: Mapping[str, tuple[Dimension, Any]],
    present: set[str],
    layout: BackboneLayout | None,
) -> None:
    """Write first-class target values into ``cfg`` (in place).

    Args:
        cfg: The config (``cfg.model`` is edited).
        values: ``target name -> (dimension, value)`` for the active dimensions.
        present: Every target the space has (active or not): decides module swaps, so
            all candidates of a space share their module types.
        layout: The base backbone's layout (None when the space has no backbone target).
    """
    from nasdet.models import FlexResNet, make_divisible

    model = cfg.model
    if layout is not None and any(TARGETS[t].is_backbone for t in present if t in TARGETS):
        bb = copy.deepcopy(dict(layout.flex))

        def stage_list(target: str) -> list[Any] | None:
            if target not in values:
                return None
            dim, value = values[target]
            return dim.stage_values(value)

        depths = stage_list("backbone.depths")
        if depths is not None:
            bb.pop("depth", None)
            bb["block"], bb["depths"] = layout.block, [int(d) for d in depths]
        widths = stage_list("backbone.widths")
        mults = stage_list("backbone.width_multipliers")
        if mults is not None:
            divisor = values["backbone.width_multipliers"][0].divisor or layout.divisor
            widths = [
                make_divisible(base * m, divisor)
                for base, m in zip(layout.widths, mults, strict=True)
            ]
        if widths is not None:
            bb["widths"] = [int(w) for w in widths]
            if bb.pop("width_multipliers", None) is not None and bb.get("stem_channels") is None:
                bb["stem_channels"] = layout.stem  # keep the stem the multipliers gave
        mids = stage_list("backbone.mid_widths")
        if mids is not None:
            bb.pop("expansion", None)
            bb["mid_widths"] = [int(w) for w in mids]
        unique = stage_list("backbone.unique_blocks")
        if unique is not None:
            bb["unique_blocks"] = [None if k is None else int(k) for k in unique]
        if "backbone.stem_channels" in values:
            bb["stem_channels"] = int(values["backbone.stem_channels"][1])
        if "backbone.tie_norm" in values:
            bb["tie_norm"] = bool(values["backbone.tie_norm"][1])
        model.backbone = bb
        neck = model.get("neck")
        if isinstance(neck, Mapping) and "in_channels" in neck:
            neck.in_channels = list(FlexResNet.stage_channels_for(**bb))
        _ensure_custom_imports(cfg)

    if "neck.out_channels" in values:
        width = int(values["neck.out_channels"][1])
        for path in FOLLOWERS:
            parent_path, leaf = path.rsplit(".", 1)
            parent = get_path(model, parent_path)
            if isinstance(parent, Mapping) and (leaf in parent or path == "neck.out_channels"):
                parent[leaf] = width

    for target in sorted(present & _SHARING):
        module_path = TARGETS[target].module
        module = get_path(model, module_path)
        plain, sharing = _SWAPS[module_path]
        if type_name(module) == plain:
            module["type"] = sharing
            module.pop("_scope_", None)
        _ensure_custom_imports(cfg)

    for target, (_, value) in values.items():
        spec = TARGETS.get(target)
        if spec is None or spec.is_backbone or target in ("neck.out_channels", "transfer"):
            continue
        parent = get_path(model, spec.module)
        leaf = target.rsplit(".", 1)[1]
        parent[leaf] = int(value) if spec.integer else value
