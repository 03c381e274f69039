"""The search config: which space, which objectives, which fidelity stages.

A search config is a YAML file (read with ``yaml.safe_load``)::

    space: ../../search_spaces/tiny_synth.yaml   # relative to this file
    n_trials: 8
    sampler: {type: tpe, seed: 0}                # tpe | nsga2 | random, or any class
                                                 # of optuna.samplers by name, with its
                                                 # arguments: {type: GPSampler,
                                                 # n_startup_trials: 5}, {type: CmaEsSampler}
    pruner: {type: median, n_startup_trials: 2}  # median | none, or any class of
                                                 # optuna.pruners: {type: HyperbandPruner,
                                                 # min_resource: 1, max_resource: 6}
    cfg_options: {train_dataloader.dataset.indices: 192}  # for every candidate
    max_failures: 2                              # retries of a trial whose process was
                                                 # killed (worker, node or driver lost);
                                                 # it continues from its last epoch
    pretrain:                                  # once, before the first trial, if the
      source: ../tiny_faster_rcnn_synth.py     # checkpoint (relative to the working
      checkpoint: work_dirs/pretrain/backbone.pth  # dir) is missing: the transfer
      epochs: 2                                # strategies of the space load it
      # sha256: <hex>   pins a shipped checkpoint: checked when the config is loaded,
      #                 never re-trained; it must be the space's transfer checkpoint
    enqueue:                                   # candidates run first (a fresh study),
      - name: base                             # recorded as ``enqueued_as``; the report
        params: {widths.0: 32, ...}            # compares the searched ones with 'base'
    objectives:
      - {metric: ap50, direction: maximize}
      - {metric: macs, direction: minimize}      # two or more: NSGA-II
    stages:
      - {type: complexity}                       # reject over-budget candidates
      - {type: proxy, proxies: [id_mean, params], num_images: 8, report: id_mean}
      #   (report: null: no rung; n_startup_trials: scores before the rung prunes)
      - {type: train, name: short, epochs: 2}    # the same run, continued by
      - {type: train, name: full, epochs: 6,     # the next train stage; with
         report_every_epoch: true}               # report_every_epoch it validates after
                                                 # every epoch and reports each to the
                                                 # pruner (default false: once, at its end)

Pruning (single objective): train stages report the first objective at the step
``epoch`` (epochs trained so far in the trial's one run, counted across train stages:
stage 2's first epoch after stage 1's 2 epochs is step 3), so Optuna's median,
successive-halving and Hyperband pruners and Ray Tune's ASHA compare trials epoch by
epoch. A proxy stage's ``report`` proxy is a rung of its own, off that axis: a trial
whose proxy is worse (in the first objective's direction) than the median of every
earlier score at that rung, pruned trials' too, is pruned (after the stage's
``n_startup_trials`` scores, else the pruner's, default 2; Ray: ASHA's cutoff, the top
``1 / reduction_factor``, start-up 1); ``pruner: {type: none}`` turns both off. Proxy
scores are user attributes ``proxy/<name>``; a sampler taking ``seed`` gets ``sampler.seed``/``seed``.

Metrics a trial produces (and objectives may name): ``params`` (unique trainable
parameters, count), ``macs`` (multiply-accumulates at the space's input size, count),
``proxy/<name>`` (each proxy's score), ``ap`` and ``ap50`` (COCO bbox mAP and mAP@0.5
of the last finished train stage, fractions in [0, 1]), and ``<stage>/ap``,
``<stage>/ap50`` per train stage; ``epochs`` (training epochs run so far, after the
candidate's strategy scaled the schedule) is recorded, not an objective.

ID-guided widths (optional): the seed paper's one-shot rule "stage widths proportional
to the measured ID of a trained model", iterated inside the search. A trial measures
the ID of each backbone stage's output at the end of the ``after`` train stage
(:class:`~nasdet.hooks.EigenspectrumHook` on ``num_images`` validation images) and
proposes the same candidate with widths ``round(s * ID)`` on the dimension's grid, ``s``
the largest scale whose cost (``metric`` of the whole detector, within the space's
constraints too) is at most ``budget`` x its own (see
:mod:`nasdet.space.derive_widths`). The proposal is written to the trial's
``id_widths.json`` (with the reason when there is none) and the drivers run it as a
later trial, unless the same parameters were tried already; such trials carry
``id_guided_from`` (the source trial) and count towards ``n_trials``::

    id_guided:
      dimension: widths      # the space's per-stage int dimension of backbone.widths
                             # (default: its only such dimension)
      metric: macs           # macs | params
      budget: 1.0            # the proposal costs at most budget x the source trial
      after: full            # the train stage measured (default: the last train stage)
      num_images: 16         # probe images of the spectrum
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdet.errors import NasdetError
from nasdet.utils.io import read_yaml, sha256_of

STAGE_TYPES = ("complexity", "proxy", "train")
#: Short names; any class of ``optuna.samplers`` / ``optuna.pruners`` works by its name too.
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "none")
SAMPLER_ALIASES = {"tpe": "TPESampler", "nsga2": "NSGAIISampler", "random": "RandomSampler"}
PRUNER_ALIASES = {"median": "MedianPruner", "none": "NopPruner"}
_TOP_KEYS = {"space", "n_trials", "sampler", "pruner", "objectives", "stages", "seed",
             "cfg_options", "pretrain", "id_guided", "enqueue", "max_failures"}
#: Retries of an interrupted trial when the config does not say (``max_failures``).
DEFAULT_MAX_FAILURES = 2
_ID_GUIDED_KEYS = {"dimension", "metric", "budget", "after", "num_images"}
#: Costs an ID-guided proposal may be held to (see :mod:`nasdet.space.derive_widths`).
ID_GUIDED_METRICS = ("macs", "params")
_PRETRAIN_KEYS = {"source", "checkpoint", "epochs", "batch_size", "lr", "sha256"}
_STAGE_KEYS = {
    "complexity": {"type", "name"},
    "proxy": {"type", "name", "proxies", "num_images", "report", "layers", "n_startup_trials"},
    "train": {"type", "name", "epochs", "cfg_options", "report_every_epoch"},
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
    #: ``{"dimension", "metric", "budget", "after", "num_images"}`` (all filled in) or None.
    id_guided: dict[str, Any] | None = None
    #: Candidates run first: ``{"name": str, "params": {...}}`` each, checked against the space.
    enqueue: tuple[dict[str, Any], ...] = ()
    #: Times a trial cut off by a lost process (worker, node, driver) is retried; it
    #: continues from its last epoch checkpoint (0: never retried).
    max_failures: int = DEFAULT_MAX_FAILURES

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
    from nasdet.utils.resources import resolve_path

    path = resolve_path(path, kind="configs").absolute()
    if not path.is_file():
        raise NasdetError("search config not found", file=path)
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise _fail(path, "<top>", "must be a mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(path, sorted(unknown)[0], f"unknown key (expected one of {sorted(_TOP_KEYS)})")

    if "space" not in raw:
        raise _fail(path, "space", "missing: the search space YAML to search")
    # Next to this file, in the working directory, or shipped (nasdet::NAME).
    space_path = resolve_path(str(raw["space"]), kind="search_spaces",
                              relative_to=path.parent).absolute().resolve()
    if not space_path.is_file():
        raise _fail(path, "space", f"search space file not found: {raw['space']}")

    n_trials = raw.get("n_trials", 10)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise _fail(path, "n_trials", f"must be a positive integer, got {n_trials!r}")

    max_failures = raw.get("max_failures", DEFAULT_MAX_FAILURES)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise _fail(path, "max_failures",
                    f"must be a non-negative integer, got {max_failures!r}")

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

    sampler = raw.get("sampler") or {"type": "nsga2" if len(objectives) > 1 else "tpe"}
    sampler = _strategy(path, "sampler", sampler)
    pruner = _strategy(path, "pruner", raw.get("pruner") or {"type": "median"})

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
        if pretrain.get("sha256") is not None:  # a shipped one when not in the working dir
            pretrain["checkpoint"] = str(resolve_path(str(pretrain["checkpoint"]),
                                                      kind="checkpoints"))
            _check_pinned(path, pretrain, space_path)
    id_guided = None
    if raw.get("id_guided") is not None:
        id_guided = _id_guided(path, raw["id_guided"], stages, space_path)
    cfg = SearchConfig(path=path, space_path=space_path, n_trials=n_trials,
                       objectives=objectives, stages=stages, sampler=sampler, pruner=pruner,
                       seed=int(raw.get("seed", 0)), cfg_options=dict(cfg_options),
                       pretrain=pretrain, id_guided=id_guided,
                       enqueue=_enqueue(path, raw.get("enqueue"), space_path),
                       max_failures=max_failures)
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
    if kind == "train" and not isinstance(options.get("report_every_epoch", False), bool):
        raise _fail(path, f"{key}.report_every_epoch",
                    f"must be true or false, got {options['report_every_epoch']!r}")
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
        if report is not None and report not in proxies:
            raise _fail(path, f"{key}.report", f"'{report}' is not among this stage's proxies")
        startup = options.get("n_startup_trials", 0)
        if isinstance(startup, bool) or not isinstance(startup, int) or startup < 0:
            raise _fail(path, f"{key}.n_startup_trials",
                        f"must be a non-negative integer, got {startup!r}")
        options.setdefault("num_images", 8)
    return Stage(type=kind, name=str(raw.get("name", kind if kind != "train" else f"train{i}")),
                 options=options)


def optuna_class(section: str, kind: str) -> type:
    """The class a ``sampler`` / ``pruner`` section's ``type`` names (alias or class name).

    Args:
        section: ``sampler`` or ``pruner``.
        kind: A short alias (:data:`SAMPLERS`, :data:`PRUNERS`) or a class name of
            ``optuna.samplers`` / ``optuna.pruners``.

    Raises:
        KeyError: ``kind`` names no such class.
    """
    import inspect

    import optuna

    module, base, aliases = ((optuna.samplers, optuna.samplers.BaseSampler, SAMPLER_ALIASES)
                             if section == "sampler" else
                             (optuna.pruners, optuna.pruners.BasePruner, PRUNER_ALIASES))
    cls = getattr(module, aliases.get(kind, kind), None) if isinstance(kind, str) else None
    if (not (isinstance(cls, type) and issubclass(cls, base)) or kind.startswith("_")
            or inspect.isabstract(cls) or cls.__name__.startswith("Base")):
        raise KeyError(kind)
    return cls


def optuna_class_names(section: str) -> list[str]:
    """The aliases and class names a ``sampler`` / ``pruner`` ``type`` may take."""
    import optuna

    module = optuna.samplers if section == "sampler" else optuna.pruners
    names = []
    for name in sorted(getattr(module, "__all__", dir(module))):
        try:
            optuna_class(section, name)
        except KeyError:
            continue
        if not name.startswith("Base"):
            names.append(name)
    return [*(SAMPLERS if section == "sampler" else PRUNERS), *names]


def _strategy(path: Path, section: str, raw: Any) -> dict[str, Any]:
    """Validate a ``sampler`` / ``pruner`` section: a known ``type`` and its arguments."""
    import inspect

    if not isinstance(raw, dict) or "type" not in raw:
        raise _fail(path, section, "must be a mapping with 'type' (and the class's "
                                   "arguments)")
    kind = raw["type"]
    try:
        cls = optuna_class(section, kind)
    except KeyError:
        raise _fail(path, f"{section}.type",
                    f"must be one of {optuna_class_names(section)} (a short name or a "
                    f"class of optuna.{section}s), got {kind!r}") from None
    params = inspect.signature(cls.__init__).parameters
    names = {n for n, p in params.items() if n != "self"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if section == "sampler":
        names.add("seed")  # read by make_sampler (passed on where the class takes one)
    else:
        names.add("reduction_factor")  # ASHA's, read by the Ray driver
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for arg in sorted(set(raw) - {"type"}):
        if arg not in names and not takes_any:
            raise _fail(path, f"{section}.{arg}",
                        f"not an argument of optuna.{section}s.{cls.__name__} "
                        f"(it takes {sorted(names)})")
    return dict(raw)


def _id_guided(path: Path, raw: Any, stages: tuple[Stage, ...],
               space_path: Path) -> dict[str, Any]:
    """Validate the ``id_guided`` section; defaults filled in."""
    import math

    if not isinstance(raw, dict):
        raise _fail(path, "id_guided", f"must be a mapping with keys {sorted(_ID_GUIDED_KEYS)}")
    unknown = set(raw) - _ID_GUIDED_KEYS
    if unknown:
        raise _fail(path, f"id_guided.{sorted(unknown)[0]}",
                    f"unknown key (expected one of {sorted(_ID_GUIDED_KEYS)})")
    metric = raw.get("metric", "macs")
    if metric not in ID_GUIDED_METRICS:
        raise _fail(path, "id_guided.metric",
                    f"must be one of {ID_GUIDED_METRICS}, got {metric!r}")
    budget = raw.get("budget", 1.0)
    if (isinstance(budget, bool) or not isinstance(budget, (int, float))
            or not math.isfinite(budget) or budget <= 0):
        raise _fail(path, "id_guided.budget",
                    f"must be a positive number (a fraction of the source trial's "
                    f"{metric}), got {budget!r}")
    num_images = raw.get("num_images", 16)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise _fail(path, "id_guided.num_images",
                    f"must be a positive integer, got {num_images!r}")
    trains = [s.name for s in stages if s.type == "train"]
    if not trains:
        raise _fail(path, "id_guided", "needs a train stage: the ID is measured on the "
                                       "trained model")
    after = raw.get("after", trains[-1])
    if after not in trains:
        kinds = {s.name: s.type for s in stages}
        what = f"a {kinds[after]} stage" if after in kinds else "not a stage"
        raise _fail(path, "id_guided.after",
                    f"{after!r} is {what}; expected a train stage: {trains}")

    from nasdet.space import SearchSpace

    # Errors of the space itself name the space file.
    space = SearchSpace.from_yaml(space_path)
    widths = [d.name for d in space.dimensions if d.target == "backbone.widths"]
    dimension = raw.get("dimension", widths[0] if len(widths) == 1 else None)
    if dimension is None:
        raise _fail(path, "id_guided.dimension",
                    f"missing, and {space_path.name} has no backbone.widths dimension to "
                    "default to")
    dims = {d.name: d for d in space.dimensions}
    if dimension not in dims:
        raise _fail(path, "id_guided.dimension",
                    f"{dimension!r} is not a dimension of {space_path.name} (it has "
                    f"{sorted(dims)})")
    dim = dims[dimension]
    if dim.target != "backbone.widths" or dim.kind != "int" or not dim.per_stage:
        raise _fail(path, "id_guided.dimension",
                    f"{dimension!r} must be a per-stage int dimension with target "
                    f"backbone.widths (it is {dim.kind} "
                    f"{dim.target or dim.cfg_key}{'' if dim.per_stage else ', one value'})")
    return {"dimension": dimension, "metric": metric, "budget": float(budget),
            "after": after, "num_images": num_images}


def _check_pinned(path: Path, pretrain: dict[str, Any], space_path: Path) -> None:
    """A pinned ``pretrain.checkpoint``: present, the recorded bytes, the space's own."""
    want = str(pretrain["sha256"]).lower()
    ckpt = Path(str(pretrain["checkpoint"])).absolute()
    if not ckpt.is_file():
        raise _fail(path, "pretrain.checkpoint",
                    f"pinned checkpoint not found: {ckpt} (a pinned checkpoint is not "
                    "re-trained; restore it, or drop pretrain.sha256 to pre-train one)")
    got = sha256_of(ckpt)
    if got != want:
        raise _fail(path, "pretrain.sha256",
                    f"{ckpt} has sha256 {got}, expected {want}: not the pinned checkpoint "
                    "(changed or corrupted)")
    from nasdet.space import SearchSpace

    dim = SearchSpace.from_yaml(space_path).strategy_dimension
    used = dim.checkpoint if dim is not None else None
    if used is None or Path(used).absolute().resolve() != ckpt.resolve():
        raise _fail(path, "pretrain.checkpoint",
                    f"{ckpt} is not what the transfer strategies of {space_path.name} load "
                    f"({used}): set the space's transfer checkpoint to it")


def _enqueue(path: Path, raw: Any, space_path: Path) -> tuple[dict[str, Any], ...]:
    """Validate the ``enqueue`` list: names and params of the space's candidates."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(path, "enqueue", "must be a list of {name, params} mappings")
    from nasdet.space import SearchSpace

    space = SearchSpace.from_yaml(space_path)
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        key = f"enqueue[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "params"}:
            raise _fail(path, key, "must be a mapping with exactly 'name' and 'params'")
        name, params = item["name"], item["params"]
        if not isinstance(name, str) or not name or name in {e["name"] for e in out}:
            raise _fail(path, f"{key}.name", f"must be a unique non-empty string, got {name!r}")
        if not isinstance(params, dict):
            raise _fail(path, f"{key}.params", "must be a mapping of the space's parameters")
        try:
            space.candidate(params)
        except NasdetError as exc:
            raise _fail(path, f"{key}.params.{exc.key}", exc.message) from None
        out.append({"name": name, "params": dict(params)})
    return tuple(out)


def _objective(path: Path, i: int, raw: Any) -> Objective:
    key = f"objectives[{i}]"
    if not isinstance(raw, dict) or "metric" not in raw:
        raise _fail(path, key, "must be a mapping with 'metric' and 'direction'")
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise _fail(path, f"{key}.direction", f"must be maximize or minimize, got {direction!r}")
    return Objective(metric=str(raw["metric"]), direction=direction)
