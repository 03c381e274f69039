"""Building MMDetection models from configs: the one detector builder and its checks.

Everything that turns ``cfg.model`` into a module goes through here, so a config is
checked (unknown types, misspelt arguments) and built the same way by the space's
complexity counter, the spectrum tools, the proxies and the transfer checks.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from typing import Any

from mmengine.config import Config
from torch import nn

from nasdet.errors import NasdetError
from nasdet.utils.output import quiet_init_logs


def module_class(type_name: Any) -> type | None:
    """The class a config ``type`` names in mmdet's ``MODELS`` (None if unknown)."""
    from mmdet.registry import MODELS

    import nasdet.models  # noqa: F401  (registers nasdet's modules)

    register_detection_modules()
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    return MODELS.get(type_name)


_mmdet_registered = False


def register_detection_modules() -> None:
    """Register mmdet's modules (without setting a default scope) once per process."""
    global _mmdet_registered
    if not _mmdet_registered:
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        _mmdet_registered = True


def accepts(type_name: Any, arg: str) -> bool:
    """Whether the registered class ``type_name`` takes ``arg`` in some ``__init__`` of its MRO."""
    cls = module_class(type_name)
    if cls is None:
        return False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and arg in inspect.signature(init).parameters:
            return True
    return False


# `type` values resolved outside registries (mmcv.ops by name, NMS by name).
_NON_REGISTRY_TYPES = {"nms", "soft_nms", "nms_rotated"}


def _registries() -> list[Any]:
    from mmdet.registry import MODELS, TASK_UTILS
    from mmengine.registry import WEIGHT_INITIALIZERS

    import nasdet.models  # noqa: F401  (registers nasdet's modules)

    register_detection_modules()
    return [MODELS, TASK_UTILS, WEIGHT_INITIALIZERS]  # init_cfg types: 'Pretrained', ...


def _known(type_name: str, registries: list[Any]) -> bool:
    import mmcv.ops

    if type_name in _NON_REGISTRY_TYPES or hasattr(mmcv.ops, type_name):
        return True
    return any(reg.get(type_name) is not None for reg in registries)


# Layer configs (mmcv's build_norm_layer, ...) whose builders consume keys such as
# `requires_grad` or `fallback_on_stride` before calling the constructor.
_LAYER_KEYS = ("norm_cfg", "conv_cfg", "act_cfg", "upsample_cfg", "dcn", "plugins")


def _resolve(type_name: str, registries: list[Any]) -> Any:
    for reg in registries:
        obj = reg.get(type_name)
        if obj is not None:
            return obj
    return None


def unexpected_argument(obj: Any, keys: Any) -> tuple[str, str] | None:
    """The first of ``keys`` that ``obj`` (a class or function) does not take, with a hint.

    Args:
        obj: What a config dict builds.
        keys: The dict's keys besides ``type``.

    Returns:
        ``(key, hint)``, or ``None`` when every key is taken (or ``obj`` takes
        ``**kwargs``, or its signature cannot be read).
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    for key in keys:
        if isinstance(key, str) and not key.startswith("_") and key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            return key, f" (did you mean '{close[0]}'?)" if close else ""
    return None


def check_model_types(cfg: Config) -> None:
    """Every ``type`` inside ``cfg.model`` must name a registered module that takes its keys.

    Keys are checked against the constructor of mmdet's and nasdet's own modules (a
    misspelt ``--cfg-options model.backbone.deth=34`` fails here, not as a ``TypeError``
    inside the Runner); layers of torch and mmcv, and ``norm_cfg``/``conv_cfg``/...
    layer configs, are left alone, since their builders consume keys such as
    ``requires_grad`` first.

    Args:
        cfg: A config whose ``custom_imports`` have been imported.

    Raises:
        NasdetError: naming the config file, the dotted key and the unknown type or key.
    """
    registries = _registries()

    def visit(node: Any, key: str) -> None:
        if isinstance(node, dict):
            t = node.get("type")
            if isinstance(t, str) and not _known(t, registries):
                hint = ""
                if "." not in t and not cfg.get("custom_imports"):
                    hint = " (add the module that registers it to custom_imports)"
                raise NasdetError(
                    f"unknown module type '{t}': not registered in mmdet or nasdet{hint}",
                    file=cfg.filename, key=f"{key}.type")
            obj = _resolve(t, registries) if isinstance(t, str) else None
            layer = key.rsplit(".", 1)[-1].endswith(_LAYER_KEYS)  # builders pop keys first
            if not layer and getattr(obj, "__module__", "").startswith(("mmdet.", "nasdet.")):
                bad = unexpected_argument(obj, [k for k in node if k != "type"])
                if bad:
                    raise NasdetError(f"{t} takes no argument '{bad[0]}'{bad[1]}",
                                      file=cfg.filename, key=f"{key}.{bad[0]}")
            for k, v in node.items():
                visit(v, f"{key}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{key}[{i}]")

    if "model" not in cfg:
        raise NasdetError("config has no 'model'", file=cfg.filename, key="model")
    visit(cfg.model, "model")


def build_detector(cfg: Any, *, seed: int | None = 0, init_weights: bool = True) -> nn.Module:
    """Build the detector of ``cfg`` with MMDetection's and nasdet's modules registered.

    ``custom_imports`` are imported and the types and arguments of ``cfg.model``
    checked (:func:`check_model_types`) first; the model is built under the config's
    ``default_scope`` (``mmdet`` if none).

    Args:
        cfg: An mmengine ``Config`` with a ``model`` entry.
        seed: Seed of torch's global generator before building, so the random
            initialisation is reproducible (``None``: leave the generator alone).
        init_weights: Run ``model.init_weights()`` (what training starts from: random,
            or pretrained weights where the config's ``init_cfg`` names them). Skip it
            when a checkpoint overwrites every weight anyway, or only counting.

    Returns:
        The model, on CPU, in train mode as built.

    Raises:
        NasdetError: An unknown module type or argument in ``cfg.model``, or a build
            error, naming the config file.
    """
    import torch
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    import nasdet.models  # noqa: F401  (registers nasdet's modules)

    register_detection_modules()
    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    check_model_types(cfg)
    if seed is not None:
        torch.manual_seed(int(seed))
    try:
        with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
            model = MODELS.build(copy.deepcopy(cfg.model))
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise NasdetError(
            f"cannot build the model: {type(exc).__name__}: {exc}",
            file=cfg.filename or "<config>", key="model") from None
    if init_weights:
        with quiet_init_logs():
            model.init_weights()
    return model


def count_model_parameters(cfg: Config) -> tuple[int, int]:
    """Build ``cfg.model`` and count its distinct (trainable, total) scalar parameters.

    Args:
        cfg: A config whose ``custom_imports`` can be imported.

    Returns:
        ``(trainable, total)`` as :func:`nasdet.models.count_parameters` counts them.
    """
    from nasdet.models.utils.param_count import count_parameters

    model = build_detector(cfg, seed=None, init_weights=False)
    return count_parameters(model, trainable_only=True), count_parameters(model)
