"""The search config: which space, which objectives, which fidelity stages.

A search config is a YAML file (read with ``yaml.safe_load``)::

    space: ../../search_spaces/tiny_synth.yaml   # relative to this file
    n_trials: 8
    sampler: {type: tpe, seed: 0}                # tpe | nsga2 | random
    pruner: {type: median, n_startup_trials: 2}  # median | none (single objective)
    cfg_options: {train_dataloader.dataset.indices: 192}  # for every candidate
    pretrain:                                  # once, before the first trial, if the
      source: ../tiny_faster_rcnn_synth.py     # checkpoint (relative to the working
      checkpoint: work_dirs/pretrain/backbone.pth  # dir) is missing: the transfer
      epochs: 2                                # strategies of the space load it
    objectives:
      - {metric: ap50, direction: maximize}
      - {metric: macs, direction: minimize}      # two or more: NSGA-II
    stages:
      - {type: complexity}                       # reject over-budget candidates
      - {type: proxy, proxies: [id_mean, params], num_images: 8, report: id_mean}
      - {type: train, name: short, epochs: 2}    # the same run, continued by
      - {type: train, name: full, epochs: 6}     # the next train stage

Metrics a trial produces (and objectives may name): ``params`` (unique trainable
parameters, count), ``macs`` (multiply-accumulates at the space's input size, count),
``proxy/<name>`` (each proxy's score), ``ap`` and ``ap50`` (COCO bbox mAP and mAP@0.5
of the last finished train stage, fractions in [0, 1]), and ``<stage>/ap``,
``<stage>/ap50`` per train stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nasdet.errors import NasdetError

STAGE_TYPES = ("complexity", "proxy", "train")
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "none")
_TOP_KEYS = {"space", "n_trials", "sampler", "pruner", "objectives", "stages", "seed",
             "cfg_options", "pretrain"}
_PRETRAIN_KEYS = {"source", "checkpoint", "epochs", "batch_size", "lr"}
_STAGE_KEYS = {
    "complexity": {"type", "name"},
    "proxy": {"type", "name", "proxies", "num_images", "report", "layers"},
    "train": {"type", "name", "epochs", "cfg_options"},
}


@dataclass(frozen=True)
class Stage:
    """One fidelity stage of a trial.

    Args:
        type: ``complexity``, ``proxy`` or ``train``.
        name: Unique name; metrics of train stages are prefixed with it.
        options: The remaining keys of the stage (e.g. ``epochs``, ``proxies``).
    """

    type: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction (``maximize`` or ``minimize``)."""

    metric: str
    direction: str


@dataclass(frozen=True)
class SearchConfig:
    """A validated search config (see the module docstring for the YAML form)."""

    path: Path
    space_path: Path
    n_trials: int
    objectives: tuple[Objective, ...]
    stages: tuple[Stage, ...]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    seed: int = 0
    cfg_options: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] | None = None

    @property
    def metrics(self) -> set[str]:
        """Names of the metrics this config's stages produce."""
        out: set[str] = set()
        for stage in self.stages:
            if stage.type == "complexity":
                out |= {"params", "macs"}
            elif stage.type == "proxy":
                out |= {f"proxy/{p}" for p in stage.options.get("proxies", [])}
            else:
                out |= {"ap", "ap50", f"{stage.name}/ap", f"{stage.name}/ap50"}
        return out

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def _fail(path: Path, key: str, message: str) -> NasdetError:
    return NasdetError(message, file=path, key=key)


def load_search_config(path: str | Path, **overrides: Any) -> SearchConfig:
    """Read and validate a search config.

    Args:
        path: The YAML file.
        **overrides: Top-level keys replacing the file's (e.g. ``n_trials=4``); ``None``
            values are ignored.

    Returns:
        The validated config. Every error names the file and the key.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise NasdetError("search config not found", file=path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise NasdetError(f"not valid YAML: {exc}", file=path) from None
    if not isinstance(raw, dict):
        raise _fail(path, "<top>", "must be a mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(path, sorted(unknown)[0], f"unknown key (expected one of {sorted(_TOP_KEYS)})")

    if "space" not in raw:
        raise _fail(path, "space", "missing: the search space YAML to search")
    space_path = (path.parent / str(raw["space"])).resolve()
    if not space_path.is_file():
        space_path = Path(str(raw["space"])).absolute()
    if not space_path.is_file():
        raise _fail(path, "space", f"search space file not found: {raw['space']}")

    n_trials = raw.get("n_trials", 10)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise _fail(path, "n_trials", f"must be a positive integer, got {n_trials!r}")

    stages = tuple(_stage(path, i, s) for i, s in enumerate(raw.get("stages") or []))
    if not stages:
        raise _fail(path, "stages", "at least one stage is needed")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise _fail(path, "stages", f"stage names must be unique, got {names}")
    train_epochs = [s.options["epochs"] for s in stages if s.type == "train"]
    if train_epochs != sorted(train_epochs) or len(set(train_epochs)) != len(train_epochs):
        raise _fail(path, "stages", "train stages continue one run: epochs must increase")

    objectives = tuple(_objective(path, i, o) for i, o in enumerate(raw.get("objectives") or []))
    if not objectives:
        raise _fail(path, "objectives", "at least one objective is needed")

    sampler = dict(raw.get("sampler") or {"type": "nsga2" if len(objectives) > 1 else "tpe"})
    if sampler.get("type") not in SAMPLERS:
        raise _fail(path, "sampler.type", f"must be one of {SAMPLERS}, got {sampler.get('type')!r}")
    pruner = dict(raw.get("pruner") or {"type": "median"})
    if pruner.get("type") not in PRUNERS:
        raise _fail(path, "pruner.type", f"must be one of {PRUNERS}, got {pruner.get('type')!r}")

    cfg_options = raw.get("cfg_options") or {}
    if not isinstance(cfg_options, dict):
        raise _fail(path, "cfg_options", "must be a mapping of dotted config keys to values")
    pretrain = raw.get("pretrain")
    if pretrain is not None:
        if not isinstance(pretrain, dict) or not {"source", "checkpoint"} <= set(pretrain):
            raise _fail(path, "pretrain", "must be a mapping with 'source' and 'checkpoint'")
        unknown = set(pretrain) - _PRETRAIN_KEYS
        if unknown:
            raise _fail(path, f"pretrain.{sorted(unknown)[0]}",
                        f"unknown key (expected one of {sorted(_PRETRAIN_KEYS)})")
        pretrain = dict(pretrain)
        source = path.parent / str(pretrain["source"])
        if not source.is_file():
            raise _fail(path, "pretrain.source", f"config not found: {pretrain['source']}")
        pretrain["source"] = str(source.resolve())
    cfg = SearchConfig(path=path, space_path=space_path, n_trials=n_trials,
                       objectives=objectives, stages=stages, sampler=sampler, pruner=pruner,
                       seed=int(raw.get("seed", 0)), cfg_options=dict(cfg_options),
                       pretrain=pretrain)
    for i, obj in enumerate(objectives):
        if obj.metric not in cfg.metrics:
            raise _fail(path, f"objectives[{i}].metric",
                        f"'{obj.metric}' is not produced by the stages "
                        f"(they produce {sorted(cfg.metrics)})")
    return cfg


def _stage(path: Path, i: int, raw: Any) -> Stage:
    key = f"stages[{i}]"
    if not isinstance(raw, dict) or raw.get("type") not in STAGE_TYPES:
        raise _fail(path, f"{key}.type", f"must be one of {STAGE_TYPES}")
    kind = raw["type"]
    unknown = set(raw) - _STAGE_KEYS[kind]
    if unknown:
        raise _fail(path, f"{key}.{sorted(unknown)[0]}", f"unknown key for a {kind} stage")
    options = {k: v for k, v in raw.items() if k not in ("type", "name")}
    if kind == "train":
        epochs = options.get("epochs")
        if not isinstance(epochs, int) or epochs < 1:
            raise _fail(path, f"{key}.epochs", f"must be a positive integer, got {epochs!r}")
    if kind == "proxy":
        proxies = options.setdefault("proxies", ["id_mean"])
        if not isinstance(proxies, list) or not proxies:
            raise _fail(path, f"{key}.proxies", "must be a non-empty list of proxy names")
        from nasdet.proxies import registered_proxies

        known = registered_proxies()
        for j, name in enumerate(proxies):
            if name not in known:
                raise _fail(path, f"{key}.proxies[{j}]",
                            f"unknown proxy '{name}' (registered: {sorted(known)})")
        report = options.setdefault("report", proxies[0])
        if report not in proxies:
            raise _fail(path, f"{key}.report", f"'{report}' is not among this stage's proxies")
        options.setdefault("num_images", 8)
    return Stage(type=kind, name=str(raw.get("name", kind if kind != "train" else f"train{i}")),
                 options=options)


def _objective(path: Path, i: int, raw: Any) -> Objective:
    key = f"objectives[{i}]"
    if not isinstance(raw, dict) or "metric" not in raw:
        raise _fail(path, key, "must be a mapping with 'metric' and 'direction'")
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise _fail(path, f"{key}.direction", f"must be maximize or minimize, got {direction!r}")
    return Objective(metric=str(raw["metric"]), direction=direction)
