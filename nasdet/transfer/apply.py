"""Applying a strategy (built-in name or fragment file) to any base detector config."""

from __future__ import annotations

import ast
import copy
import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from nasdet.errors import NasdetError
from nasdet.models.transfer.loading import check_state_fills
from nasdet.models.utils.build import module_class
from nasdet.transfer.strategies import STRATEGIES, _backbone, list_strategies
from nasdet.utils.checkpoint import is_url, read_state_dict
from nasdet.utils.config import detector_cfg
from nasdet.utils.resources import data_root

if TYPE_CHECKING:
    from nasdet.models.utils import SlicedLoadResult

#: Where the built-in strategy fragments live.
TRANSFER_CONFIG_DIR = data_root() / "configs" / "transfer"  # shipped (nasdet/.mim when installed)


def _base_checkpoint_hint(cfg: Config) -> str:
    try:
        init = detector_cfg(cfg.model)["backbone"].get("init_cfg")
    except (KeyError, TypeError, AttributeError):
        return ""
    if isinstance(init, dict) and init.get("type") == "Pretrained":
        return (
            f" (the base config's backbone names {init.get('checkpoint')}; pass it as "
            "checkpoint= to use it)"
        )
    return ""


def _fragment_path(strategy: str | Path) -> Path:
    text = str(strategy)
    if _is_fragment_file(text):
        path = Path(text)
        if not path.is_file():
            raise NasdetError("transfer fragment not found", file=path, key="strategy")
        return path
    path = TRANSFER_CONFIG_DIR / f"{text}.py"
    if not path.is_file():
        raise NasdetError(
            f"unknown transfer strategy {text!r}; expected one of {list_strategies()} or a "
            "configs/transfer/*.py file",
            key="strategy",
        )
    return path


def load_fragment(strategy: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Read a strategy fragment.

    Args:
        strategy: A built-in name or a fragment file.

    Two kinds of file. A *full config* (it has a ``model``: the shipped
    ``configs/transfer/*.py``, which inherit the tiny detector and train as they stand
    with MMDetection's own tools) is the strategy applied to its base; only its
    ``transfer`` record (``type`` and parameters) carries over to another base, since
    every key the strategy writes is a parameter of the strategy. A *partial fragment*
    (no ``model``: ``transfer = dict(type=..., **params)`` plus keys merged as they
    stand, e.g. an ``optim_wrapper``) is an input of :func:`apply_transfer` only.

    Args:
        strategy: A built-in name or a fragment file.

    Returns:
        ``(path, transfer, rest)``: the file, its ``transfer`` dict (``type`` and
        parameters, ``fragment`` dropped) and the keys to merge into the detector config
        (none for a full config).
    """
    path = _fragment_path(strategy)
    try:
        frag = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises several types for a broken config
        raise NasdetError(f"cannot read fragment: {type(exc).__name__}: {exc}", file=path) from None
    data = frag.to_dict()
    transfer = dict(data.pop("transfer", None) or {})
    transfer.pop("fragment", None)
    if "model" in data:
        data = {}
    return path, transfer, data


def _is_fragment_file(strategy: str | Path) -> bool:
    text = str(strategy)
    return text.endswith(".py") or "/" in text or Path(text).is_file()


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside (as the shipped configs say)."""
    root = TRANSFER_CONFIG_DIR.parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _check_checkpoint(checkpoint: str, name: str) -> None:
    if is_url(checkpoint):
        return  # torchvision:// etc.: mmengine's CheckpointLoader fetches it at init
    if not Path(checkpoint).is_file():
        raise NasdetError(
            f"checkpoint file not found (strategy '{name}')", file=checkpoint, key="checkpoint"
        )


@functools.lru_cache(maxsize=2)
def _cached_state(path: str, _mtime_ns: int, _size: int, prefix: str | None) -> dict:
    # Searches apply a strategy to many candidates with one checkpoint: read it once
    # (the key includes mtime and size, so a rewritten file is read again).
    return read_state_dict(path, prefix=prefix, key="checkpoint")


def check_backbone_checkpoint(
    backbone: dict, checkpoint: str | Path, *, prefix: str | None = None
) -> SlicedLoadResult:
    """Load ``checkpoint`` into a freshly built ``backbone`` and report what matched.

    The check a detector's ``init_cfg=dict(type='Pretrained', ...)`` would otherwise
    only log at the start of training: wider checkpoints are sliced for
    ``FlexResNet``; other shape differences, or a checkpoint that would leave the
    backbone mostly random (:func:`~nasdet.models.transfer.loading.check_state_fills`),
    raise. Missing and unexpected keys are logged.

    Args:
        backbone: Backbone config (``init_cfg`` is ignored).
        checkpoint: Local file (URLs are not fetched here).
        prefix: Key prefix to take and strip.

    Returns:
        The :class:`~nasdet.models.utils.SlicedLoadResult`.

    Raises:
        NasdetError: Unreadable file, too few matching weights, or unsliceable shapes.
    """
    from mmdet.registry import MODELS

    from nasdet.models.utils import load_sliced_state_dict

    module_class(backbone.get("type"))  # registers mmdet and nasdet
    if not Path(checkpoint).is_file():
        raise NasdetError("checkpoint file not found", file=checkpoint, key="checkpoint")
    stat = Path(checkpoint).stat()
    state = _cached_state(str(Path(checkpoint).resolve()), stat.st_mtime_ns, stat.st_size, prefix)
    cfg = dict(copy.deepcopy(dict(backbone)))
    cfg["init_cfg"] = None
    cfg.pop("pretrained", None)
    net = MODELS.build(cfg)
    # The rule FlexResNet's init applies: refuse a checkpoint leaving the backbone mostly
    # random (none of its weights, other kernels, under half of its elements).
    check_state_fills(net, state, source=checkpoint, key="checkpoint")
    result = load_sliced_state_dict(
        net, state, strict_shapes=cfg.get("type") != "FlexResNet", source=checkpoint
    )
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    for label, keys in (("missing", missing), ("unexpected", result.unexpected_keys)):
        if keys:
            print_log(
                f"{checkpoint}: {len(keys)} {label} backbone keys: {', '.join(keys[:6])}"
                f"{' ...' if len(keys) > 6 else ''}",
                logger="current",
                level=logging.WARNING,
            )
    return result


def apply_transfer(
    cfg: Config, strategy: str | Path, *, checkpoint: str | Path | None = None, **params: Any
) -> Config:
    """Combine a base detector config with a transfer strategy.

    The strategy named by the fragment's ``transfer.type`` edits a copy of ``cfg`` with
    the fragment's parameters overridden by ``params`` (a partial fragment's other keys
    are merged first, see :func:`load_fragment`). Every edit is one that MMDetection
    applies itself (``init_cfg=dict(type='Pretrained')``, ``frozen_stages``,
    ``norm_eval``, norm layers, optimizer and scheduler keys, registered wrapper models),
    so the result trains the same under ``Runner.from_cfg(Config.fromfile(dumped))`` as
    under nasdet's tools: ``configs/transfer/<name>.py`` is this function's output on
    the tiny detector, written out. The result records ``transfer=dict(type,
    checkpoint, fragment, **params)``, a record that nothing re-applies (it names the
    strategy in tables and gives :func:`schedule_factor` its rule), and imports
    ``nasdet.models`` through ``custom_imports``.

    Precedence: ``cfg`` < the strategy. Keys a user sets on top (``--cfg-options``,
    searched values) are merged after this function by its callers.

    All checks run here, before any training: unknown strategy or parameter, a missing
    checkpoint for a strategy that needs one, a local checkpoint that does not exist or
    does not fit the backbone (``torchvision://`` and other URLs are fetched by
    mmengine's loader when the model is initialised).

    Args:
        cfg: Base detector config (left unchanged).
        strategy: Built-in name (see :func:`list_strategies`) or a fragment file.
        checkpoint: Pretrained backbone weights (path or URL); ignored by ``scratch``.
            A fragment may name one in ``transfer.checkpoint``.
        **params: Strategy parameters (see the fragments / :data:`STRATEGIES`).

    Returns:
        The combined config.

    Raises:
        NasdetError: Naming the strategy, option, file or key at fault.
    """
    path, transfer, rest = load_fragment(strategy)
    name = transfer.pop("type", None)
    if name not in STRATEGIES:
        raise NasdetError(
            f"transfer.type must be one of {list_strategies()}, got {name!r}",
            file=path,
            key="transfer.type",
        )
    spec = STRATEGIES[name]
    # A built-in name asks for the strategy; the checkpoint its shipped config names
    # belongs to that example run. A file of one's own may name its checkpoint.
    named = transfer.pop("checkpoint", None) if _is_fragment_file(strategy) else None
    transfer.pop("checkpoint", None)
    if checkpoint is None:
        checkpoint = named
    known = spec.defaults()
    merged = {**known, **transfer, **params}
    for key in merged:
        if key not in known:
            raise NasdetError(
                f"strategy '{name}' has no parameter {key!r}; expected one of {sorted(known)}",
                file=path,
                key=key,
            )
    if spec.needs_checkpoint:
        if not checkpoint:
            raise NasdetError(
                f"strategy '{name}' needs a pretrained backbone checkpoint: pass "
                f"checkpoint=PATH (--checkpoint){_base_checkpoint_hint(cfg)}",
                key="checkpoint",
            )
        _check_checkpoint(str(checkpoint), name)
    out = copy.deepcopy(cfg)
    if rest:
        out.merge_from_dict(rest)
    spec.apply(out, str(checkpoint) if checkpoint else None, **merged)
    # A partial fragment's own keys say more than the strategy's defaults (a fragment's
    # lr over the fine-tuning 0.02); its `model` keys went in before wrapping.
    after = {k: v for k, v in rest.items() if k != "model"}
    if after:
        out.merge_from_dict(copy.deepcopy(after))
    if spec.needs_checkpoint and not is_url(str(checkpoint)):
        # The teacher has the base backbone's architecture; the student may be
        # another's only in norm layers, so checking the teacher covers both.
        check_backbone_checkpoint(
            out.model.teacher if name == "feature_transfer" else _backbone(out, name),
            checkpoint,
            prefix=merged.get("prefix"),
        )
    imports = dict(out.get("custom_imports") or {})
    modules = list(imports.get("imports") or [])
    if "nasdet.models" not in modules:
        out.custom_imports = ConfigDict(
            imports=[*modules, "nasdet.models"],
            allow_failed_imports=imports.get("allow_failed_imports", False),
        )
    record = dict(
        type=name,
        checkpoint=str(checkpoint) if checkpoint and spec.needs_checkpoint else None,
        fragment=_shown_path(path),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()},
    )
    previous = out.get("transfer")
    if previous:
        record["previous"] = previous
    out.transfer = ConfigDict(record)
    return out


def strategy_needs_checkpoint(strategy: str | Path) -> bool:
    """Whether the strategy (name or fragment) starts from pretrained weights."""
    _, transfer, _ = load_fragment(strategy)
    spec = STRATEGIES.get(transfer.get("type"))
    named = transfer.get("checkpoint") if _is_fragment_file(strategy) else None
    return bool(spec and spec.needs_checkpoint and not named)


def parse_strategy_spec(text: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``NAME[:key=value,...]`` (or a fragment path) into label, strategy, params.

    Values are Python literals when they parse as one (``k=2``, ``levels=[0,1]``,
    ``beta=None``), strings otherwise.

    Args:
        text: e.g. ``'freeze:k=2'``, ``'configs/transfer/l2sp.py:alpha=0.1'``.

    Returns:
        ``(label, strategy, params)``; the label is ``text`` with a path reduced to its
        stem and characters other than letters, digits, ``_.=-`` replaced by ``_``.

    Example:
        >>> parse_strategy_spec("freeze:k=2,norm_eval=False")
        ('freeze_k=2_norm_eval=False', 'freeze', {'k': 2, 'norm_eval': False})
    """
    name, _, rest = text.partition(":") if not re.match(r"^[A-Za-z]:\\", text) else (text, "", "")
    params: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise NasdetError(f"expected key=value, got {item!r}", key=text)
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    stem = Path(name).stem if name.endswith(".py") else name
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", stem + ("_" + rest if rest else "")).strip("_")
    return label, name, params


def _split_top_level(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [s for s in (p.strip() for p in out) if s]
