"""Pre-flight checks: fail before a Runner is built, with one clear message."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mmengine.config import Config

from nasdet.errors import NasdetError

# `type` values resolved outside registries (mmcv.ops by name, NMS by name).
_NON_REGISTRY_TYPES = {"nms", "soft_nms", "nms_rotated"}


def _registries() -> list[Any]:
    from mmdet.registry import MODELS, TASK_UTILS
    from mmdet.utils import register_all_modules
    from mmengine.registry import WEIGHT_INITIALIZERS

    register_all_modules(init_default_scope=False)
    return [MODELS, TASK_UTILS, WEIGHT_INITIALIZERS]  # init_cfg types: 'Pretrained', ...


def _known(type_name: str, registries: list[Any]) -> bool:
    import mmcv.ops

    if type_name in _NON_REGISTRY_TYPES or hasattr(mmcv.ops, type_name):
        return True
    return any(reg.get(type_name) is not None for reg in registries)


def check_model_types(cfg: Config) -> None:
    """Every ``type`` inside ``cfg.model`` must name a registered module.

    Args:
        cfg: A config whose ``custom_imports`` have been imported.

    Raises:
        NasdetError: naming the config file, the dotted key and the unknown type.
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
            for k, v in node.items():
                visit(v, f"{key}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{key}[{i}]")

    if "model" not in cfg:
        raise NasdetError("config has no 'model'", file=cfg.filename, key="model")
    visit(cfg.model, "model")


def check_work_dir(work_dir: str | Path) -> Path:
    """Create ``work_dir`` and prove it is writable.

    Raises:
        NasdetError: naming the directory and ``--work-dir``.
    """
    path = Path(work_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NasdetError(
            f"work dir is not writable ({exc.strerror or exc})", file=path, key="--work-dir"
        ) from None
    return path
