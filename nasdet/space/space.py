"""Search spaces from YAML: define-by-run suggestion and candidates as mmengine configs.

The data flow: ``search_spaces/*.yaml`` → :class:`SearchSpace` → ``suggest(trial)`` →
:class:`Candidate` → ``to_config()`` (an mmengine ``Config``) → ``MODELS.build`` /
``tools/train.py``. A search driver (Optuna in-process, Ray Tune on a cluster) only
hands :meth:`SearchSpace.suggest` a trial; the space asks it for values with
``trial.suggest_int/float/categorical`` and nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasdet.errors import NasdetError
from nasdet.space.schema import (
    DIMENSION_KEYS,
    KINDS,
    TOP_LEVEL_KEYS,
    Constraints,
    Dimension,
    Slot,
    TrialLike,
    as_number,
    check_conditions,
    check_mapping,
    check_name,
    error_at,
    parse_condition,
    parse_constraints,
    parse_input_size,
    parse_slots,
    same_value,
)
from nasdet.space.targets import (
    FOLLOWERS,
    TARGETS,
    BackboneLayout,
    Target,
    apply_targets,
    backbone_layout,
    check_cross,
    check_target,
    get_path,
    is_mapping,
    lookup_target,
)
from nasdet.transfer import STRATEGIES, apply_transfer
from nasdet.utils.io import atomic_write_text, read_yaml
from nasdet.utils.resources import data_root, is_shipped_name, resolve_path

if TYPE_CHECKING:
    from mmengine.config import Config

    from nasdet.models.utils.macs import Complexity
    from nasdet.space.complexity import ComplexityCache

__all__ = ["REPO_ROOT", "Candidate", "SearchSpace"]

#: The root of the shipped ``configs/`` and ``search_spaces/`` (the repository in a
#: checkout, ``nasdet/.mim`` in an installed wheel), for relative ``base`` paths.
REPO_ROOT = data_root()


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(params.items())), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, eq=False)
class Candidate:
    """One point of a :class:`SearchSpace`: its parameters, and how to make a config.

    Made by :meth:`SearchSpace.suggest` or :meth:`SearchSpace.candidate`; ``params``
    holds the active parameters only (as Optuna stores them), so
    ``space.suggest(optuna.trial.FixedTrial(candidate.params))`` rebuilds it.

    Args:
        space: The space it belongs to.
        params: ``{parameter name: value}``; per-stage dimensions have one parameter per
            stage, named ``<dimension>.<stage>``.
    """

    space: SearchSpace
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))  # later edits of the caller's
        # dict must not change the key

    @property
    def space_name(self) -> str:
        """The space's ``name``."""
        return self.space.name

    @property
    def key(self) -> str:
        """A stable short key: 12 hex digits of SHA-256 over the space name and params.

        Example:
            >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
            >>> len(space.default_candidate().key)
            12
        """
        text = json.dumps(
            {"space": self.space.name, "params": json.loads(_canonical(self.params))},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def values(self) -> dict[str, Any]:
        """``{dimension: value}`` of the active dimensions (per-stage ones as lists)."""
        out = {}
        for dim in self.space.dimensions:
            if all(p in self.params for p in dim.params):
                vals = [self.params[p] for p in dim.params]
                out[dim.name] = vals if dim.per_stage else vals[0]
        return out

    def apply(
        self, base_cfg: Config, *, transfer: bool = True, checkpoint: str | None = None
    ) -> Config:
        """A copy of ``base_cfg`` with the space's ``base_options`` and this candidate.

        Args:
            base_cfg: Usually the space's base config (e.g. loaded and shrunk for a test
                run); it is not modified.
            transfer: Apply the transfer dimension (:mod:`nasdet.transfer`). With
                False the config is the architecture alone, trained as the base would be.
            checkpoint: Overrides the transfer dimension's ``checkpoint``.

        Returns:
            The candidate's config, with ``nasdet_candidate = dict(space, space_file,
            key, params)`` recording where it came from.
        """
        cfg = copy.deepcopy(base_cfg)
        self.space.apply_base_options(cfg)
        cfg = self.space.apply_values(cfg, self.values, transfer=transfer, checkpoint=checkpoint)
        cfg.nasdet_candidate = dict(
            space=self.space.name,
            space_file=str(self.space.file) if self.space.file else None,
            key=self.key,
            params=dict(self.params),
        )
        return cfg

    def to_config(self, *, transfer: bool = True, checkpoint: str | None = None) -> Config:
        """:meth:`apply` to the space's base config.

        Example:
            >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
            >>> cfg = space.default_candidate().to_config(transfer=False)
            >>> cfg.model.backbone.type
            'FlexResNet'
        """
        return self.apply(self.space.raw_base_config(), transfer=transfer, checkpoint=checkpoint)

    def dump(
        self, path: str | Path, *, transfer: bool = True, checkpoint: str | None = None
    ) -> Path:
        """Write :meth:`to_config` as a standalone ``.py`` config (atomically).

        The file has no ``_base_``: it is mmengine's ``Config.dump`` of the merged
        config, loads with ``Config.fromfile`` and retrains with ``tools/train.py``.

        Args:
            path: Destination, ending in ``.py``.
            transfer: See :meth:`apply`.
            checkpoint: See :meth:`apply`.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix != ".py":
            raise NasdetError("candidates are dumped as Python configs: use a .py file", file=path)
        cfg = self.to_config(transfer=transfer, checkpoint=checkpoint)
        filename = cfg.filename or ""
        text = cfg.dump() if filename.endswith(".py") or not filename else cfg.pretty_text
        return atomic_write_text(path, text)

    def complexity(self) -> Complexity:
        """Parameters and MACs (see :func:`nasdet.space.complexity.candidate_complexity`)."""
        from nasdet.space.complexity import candidate_complexity

        return candidate_complexity(self)

    def check_constraints(self) -> tuple[bool, str]:
        """``(ok, reason)`` against the space's budget (see :mod:`nasdet.space.complexity`)."""
        from nasdet.space.complexity import check_constraints

        return check_constraints(self)

    def to_dict(self) -> dict[str, Any]:
        """``{"space", "key", "params"}``, JSON-ready."""
        return {"space": self.space.name, "key": self.key, "params": dict(self.params)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candidate):
            return NotImplemented
        return self.space.name == other.space.name and _canonical(self.params) == _canonical(
            other.params
        )

    def __hash__(self) -> int:
        return hash((self.space.name, _canonical(self.params)))

    def __repr__(self) -> str:
        return f"Candidate(space={self.space.name!r}, key={self.key!r}, params={dict(self.params)})"


class _ParamsTrial:
    """A strict fixed trial over stored params (no Optuna needed).

    Like ``optuna.trial.FixedTrial`` but every value must be one the slot can suggest,
    and every given parameter must be used (checked by :meth:`SearchSpace.candidate`).
    """

    def __init__(self, params: Mapping[str, Any], slots: Mapping[str, Slot], file: str | None):
        self.params = dict(params)
        self.slots = slots
        self.file = file
        self.used: set[str] = set()

    def _value(self, name: str) -> Any:
        if name not in self.params:
            raise NasdetError(
                "missing: the dimension is active but the parameter is not given",
                file=self.file,
                key=name,
            )
        value = self.params[name]
        if not self.slots[name].contains(value):
            raise NasdetError(
                f"{value!r} is not a value of this dimension", file=self.file, key=name
            )
        self.used.add(name)
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int:
        return int(self._value(name))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._value(name))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._value(name)
        return next(
            c for c in choices if c == value and (isinstance(c, bool) == isinstance(value, bool))
        )


class SearchSpace:
    """A search space over MMDetection detector configs, read from a YAML file.

    See :mod:`nasdet.space.schema` for the file format and :mod:`nasdet.space.targets`
    for the first-class targets. Everything is checked when the space is loaded: keys,
    ranges, divisors, conditions, the base config, and that the space's low and high
    corners give configs that can build (config-level checks, nothing is built).

    Args:
        data: The parsed YAML mapping.
        file: The YAML file (for messages and relative paths), or None.
        cache_file: Optional JSON file caching candidates' complexity.

    Example:
        >>> import optuna
        >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> candidate = space.suggest(study.ask())
        >>> again = space.suggest(optuna.trial.FixedTrial(dict(candidate.params)))
        >>> again.key == candidate.key
        True
    """

    def __init__(
        self, data: Any, *, file: str | Path | None = None, cache_file: str | Path | None = None
    ):
        self.file = Path(file) if file is not None else None
        fname = str(self.file) if self.file is not None else None
        self._fname = fname
        check_mapping(data, fname, None, TOP_LEVEL_KEYS)
        self.raw: dict[str, Any] = copy.deepcopy(dict(data))
        name = data.get("name", self.file.stem if self.file is not None else None)
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            raise error_at(
                "required: a name without spaces (default: the file name)", fname, "name"
            )
        self.name = name
        self.description = str(data.get("description") or "")
        self.base_path, self._base_raw = self._load_base(data.get("base"))
        self._base = copy.deepcopy(self._base_raw)
        self._base_options = self._check_base_options(data.get("base_options"))
        self.input_size = parse_input_size(data.get("input_size"), fname)
        self._check_input_size()
        self.constraints: Constraints = parse_constraints(data.get("constraints"), fname)
        self.layout: BackboneLayout | None = None
        self.dimensions: tuple[Dimension, ...] = self._parse_dimensions(data.get("dimensions"))
        self._slots = {s.param: s for d in self.dimensions for s in d.slots}
        self._present = {d.target for d in self.dimensions if d.target}
        self._check_corners()
        from nasdet.space.complexity import ComplexityCache

        self.cache: ComplexityCache = ComplexityCache(cache_file, space=self)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | Path, *, cache_file: str | Path | None = None) -> SearchSpace:
        """Read and check a space file.

        Args:
            path: The YAML file.
            cache_file: Optional JSON file caching candidates' complexity.

        Raises:
            NasdetError: naming the file and the dotted key of the first problem.

        Example:
            >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
            >>> space.name, space.input_size
            ('tiny_synth', (128, 128))
        """
        path = resolve_path(path, kind="search_spaces")
        if not path.is_file():
            raise NasdetError("search space file not found", file=path)
        data = read_yaml(path)
        if data is None:
            raise NasdetError("the file is empty", file=path)
        return cls(data, file=path, cache_file=cache_file)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        file: str | Path | None = None,
        cache_file: str | Path | None = None,
    ) -> SearchSpace:
        """A space from an already parsed mapping (``file`` anchors relative paths)."""
        return cls(data, file=file, cache_file=cache_file)

    def _search_dirs(self) -> list[Path]:
        dirs = [self.file.resolve().parent] if self.file is not None else []
        return [*dirs, REPO_ROOT]

    def _load_base(self, base: Any) -> tuple[str, Config]:
        from mmengine.config import Config

        fname = self._fname
        if not isinstance(base, str) or not base:
            raise error_at("required: the base config (a path or mmdet::...)", fname, "base")
        if is_shipped_name(base):
            base = str(resolve_path(base, kind="configs"))
        if "::" in base:
            try:
                from mmengine.hub import get_config

                return base, get_config(base)
            except Exception as exc:  # mmengine raises several types for a missing file
                raise error_at(f"cannot load base config {base}: {exc}", fname, "base") from None
        tried = (
            [d / base for d in self._search_dirs()]
            if not Path(base).is_absolute()
            else [Path(base)]
        )
        found = next((p.resolve() for p in tried if p.is_file()), None)
        if found is None:
            raise error_at(
                f"base config not found (looked for {', '.join(str(p) for p in tried)})",
                fname,
                "base",
            )
        try:
            return str(found), Config.fromfile(str(found))
        except Exception as exc:  # a broken config raises many types
            raise error_at(
                f"cannot read base config {found}: {type(exc).__name__}: {exc}", fname, "base"
            ) from None

    def _check_base_options(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        check_mapping(raw, self._fname, "base_options")
        for key in raw:
            parent = get_path(self._base, key.rsplit(".", 1)[0]) if "." in key else self._base
            if not (is_mapping(parent) or isinstance(parent, list)):
                raise error_at(
                    "the base config has no such key's parent", self._fname, f"base_options.{key}"
                )
        options = dict(raw)
        self._base.merge_from_dict(options)
        return options

    def _check_input_size(self) -> None:
        divisor = get_path(self._base, "model.data_preprocessor.pad_size_divisor") or 1
        if any(s % int(divisor) for s in self.input_size):
            raise error_at(
                f"{list(self.input_size)} is not a multiple of the data preprocessor's "
                f"pad_size_divisor ({divisor}); give the padded size the network sees",
                self._fname,
                "input_size",
            )

    # ------------------------------------------------------------------ dimensions
    def _parse_dimensions(self, raw: Any) -> tuple[Dimension, ...]:
        fname = self._fname
        if raw is None:
            raise error_at("required: at least one dimension", fname, "dimensions")
        check_mapping(raw, fname, "dimensions")
        if not raw:
            raise error_at("required: at least one dimension", fname, "dimensions")
        dims: list[Dimension] = []
        owners: dict[str, list[Dimension]] = {}
        for name, spec in raw.items():
            check_name(name, fname)
            dim = self._parse_dimension(name, spec)
            owned = dim.target or f"cfg:{dim.cfg_key}"
            # Two dimensions may set one key only when at most one is active (e.g. an lr
            # range per transfer strategy): their conditions must exclude each other.
            other = next((o for o in owners.get(owned, []) if not _exclusive(o, dim)), None)
            if other is not None:
                field_name = "target" if dim.target else "cfg_key"
                raise error_at(
                    f"'{other.name}' already sets {dim.target or dim.cfg_key} (two dimensions "
                    "may set one key only under conditions that exclude each other)",
                    fname,
                    f"{dim.key}.{field_name}",
                )
            owners.setdefault(owned, []).append(dim)
            dims.append(dim)
        check_conditions(dims, fname)
        check_cross(dims, self.layout, fname)
        transfer_params = [d for d in dims if d.target and d.target.startswith("transfer.")]
        if transfer_params and "transfer" not in owners:
            raise error_at(
                "transfer parameters need a dimension with target: transfer",
                fname,
                f"{transfer_params[0].key}.target",
            )
        return tuple(dims)

    def _parse_dimension(self, name: str, spec: Any) -> Dimension:
        fname = self._fname
        key = f"dimensions.{name}"
        check_mapping(spec, fname, key, DIMENSION_KEYS)
        has_target, has_key = "target" in spec, "cfg_key" in spec
        if has_target == has_key:
            raise error_at(
                "give exactly one of target (a first-class target) or cfg_key (any config key)",
                fname,
                key,
            )
        kind = spec.get("kind", "categorical" if "choices" in spec else None)
        if kind not in KINDS:
            raise error_at(
                f"expected one of {', '.join(KINDS)}, got {kind!r}", fname, f"{key}.kind"
            )
        target: Target | None = None
        if has_target:
            target = lookup_target(spec["target"]) if isinstance(spec["target"], str) else None
            if target is None:
                raise error_at(
                    f"unknown target {spec['target']!r}; expected one of "
                    f"{', '.join(TARGETS)}, transfer.<param>, or use cfg_key",
                    fname,
                    f"{key}.target",
                )
        per_stage = bool(target and target.per_stage)
        if "per_stage" in spec:
            if not per_stage:
                raise error_at(
                    "only per-stage backbone targets take per_stage", fname, f"{key}.per_stage"
                )
            if not isinstance(spec["per_stage"], bool):
                raise error_at("expected true or false", fname, f"{key}.per_stage")
            per_stage = spec["per_stage"]
        num_stages = 1
        if target is not None and target.is_backbone:
            num_stages = self._layout_for(key).num_stages
        divisor = None
        takes_divisor = target is not None and (
            target.channels or target.name == "backbone.width_multipliers"
        )
        if "divisor" in spec:
            if not takes_divisor:
                raise error_at("only channel targets take a divisor", fname, f"{key}.divisor")
            divisor = int(as_number(spec["divisor"], fname, f"{key}.divisor", integer=True))
            if divisor < 1:
                raise error_at("must be a positive integer", fname, f"{key}.divisor")
        elif takes_divisor:
            divisor = self.layout.divisor if target.is_backbone else 8
        slots = parse_slots(spec, kind, name, num_stages, per_stage, fname, key)
        condition = parse_condition(spec.get("condition"), fname, f"{key}.condition")
        checkpoint = None
        if "checkpoint" in spec:
            if target is None or target.name != "transfer":
                raise error_at(
                    "only the transfer target takes a checkpoint", fname, f"{key}.checkpoint"
                )
            checkpoint = self._resolve_checkpoint(spec["checkpoint"], f"{key}.checkpoint")
        dim = Dimension(
            name=name,
            target=target.name if target else None,
            cfg_key=spec.get("cfg_key"),
            kind=kind,
            slots=slots,
            per_stage=per_stage,
            num_stages=num_stages,
            divisor=divisor,
            condition=condition,
            checkpoint=checkpoint,
            file=fname,
        )
        if target is not None:
            check_target(dim, target, self._base.model, fname)
        else:
            self._check_cfg_key(dim)
        return dim

    def _layout_for(self, key: str) -> BackboneLayout:
        if self.layout is None:
            backbone = get_path(self._base, "model.backbone")
            if not isinstance(backbone, Mapping):
                raise error_at(
                    "the base config has no model.backbone", self._fname, f"{key}.target"
                )
            try:
                self.layout = backbone_layout(backbone, file=self.base_path)
            except NasdetError as exc:
                raise error_at(
                    f"{exc.message} (base config {self.base_path}, {exc.key})",
                    self._fname,
                    f"{key}.target",
                ) from None
        return self.layout

    def _resolve_checkpoint(self, value: Any, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise error_at("expected a path or URL", self._fname, key)
        if "://" in value or Path(value).is_absolute():
            return value
        for d in self._search_dirs():
            if (d / value).exists():
                return str(d / value)
        return value  # resolved against the working directory when training

    def _check_cfg_key(self, dim: Dimension) -> None:
        key, fname = dim.cfg_key, self._fname
        where = f"{dim.key}.cfg_key"
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise error_at(f"expected a dotted config key, got {key!r}", fname, where)
        if key.startswith("model."):
            inner = key[len("model.") :]
            if inner in TARGETS or inner in FOLLOWERS:
                raise error_at(
                    f"{key} is a first-class target or follows one; use target: "
                    f"{inner if inner in TARGETS else 'neck.out_channels'} so the modules "
                    "that depend on it follow",
                    fname,
                    where,
                )
        parent_path, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        parent = get_path(self._base, parent_path) if parent_path else self._base
        if isinstance(parent, list):
            if not leaf.isdigit() or int(leaf) >= len(parent):
                raise error_at(
                    f"{parent_path} is a list of {len(parent)}; {leaf} is not an index of it",
                    fname,
                    where,
                )
        elif not is_mapping(parent):
            what = "a tuple (immutable)" if isinstance(parent, tuple) else "not in the base config"
            raise error_at(f"{parent_path or key} is {what}", fname, where)

    @property
    def strategy_dimension(self) -> Dimension | None:
        """The ``target: transfer`` dimension, if any."""
        return next((d for d in self.dimensions if d.target == "transfer"), None)

    def transfer_strategies(self) -> Mapping[str, Any]:
        """The strategies the transfer dimension can name (:data:`nasdet.transfer.STRATEGIES`)."""
        return STRATEGIES

    def _check_transfer(self) -> None:
        """Strategy names and their parameters against :data:`nasdet.transfer.STRATEGIES`."""
        sdim = self.strategy_dimension
        known = self.transfer_strategies() if sdim is not None else None
        if sdim is None or known is None:
            return
        choices = sdim.slots[0].choices
        for name in choices:
            if name not in known:
                raise error_at(
                    f"unknown transfer strategy {name!r}; expected one of {', '.join(known)}",
                    self._fname,
                    f"{sdim.key}.choices",
                )
        for dim in self.dimensions:
            if not (dim.target or "").startswith("transfer."):
                continue
            param = dim.target.split(".", 1)[1]
            active_with = dim.condition.get(sdim.name, choices)
            for name in active_with:
                accepted = known[name].defaults()
                if param not in accepted:
                    raise error_at(
                        f"strategy {name!r} has no parameter {param!r} (it takes "
                        f"{', '.join(sorted(accepted)) or 'none'}); add condition: "
                        f"{{{sdim.name}: [...]}} naming the strategies that take it",
                        self._fname,
                        f"{dim.key}.target",
                    )

    def _checkable_strategies(self) -> list[str]:
        """Strategies whose corner configs can be checked here (checkpoint at hand)."""
        sdim = self.strategy_dimension
        known = self.transfer_strategies() if sdim is not None else None
        if sdim is None or known is None:
            return []
        ckpt = sdim.checkpoint
        have = ckpt is not None and ("://" in ckpt or Path(ckpt).is_file())
        return [
            s
            for s in sdim.slots[0].choices
            if not getattr(known[s], "needs_checkpoint", True) or have
        ]

    def _check_corners(self) -> None:
        """Apply the all-low and all-high points (every dimension active) and check them.

        Config-level only: FlexResNet's arguments are resolved without building it,
        and each transfer strategy that can run here (no checkpoint needed, or the
        dimension's checkpoint exists) is applied to both corners.
        """
        from nasdet.models import FlexResNet

        self._check_transfer()
        strategies = self._checkable_strategies()
        sdim = self.strategy_dimension
        for label, end in (("low", 0), ("high", 1)):
            values = {}
            for dim in self.dimensions:
                if dim.target and dim.target.startswith("transfer"):
                    continue
                ends = [s.extremes()[end] for s in dim.slots]
                values[dim.name] = ends if dim.per_stage else ends[0]
            where = (
                f"the space's {label} corner (every range at its {label} end, "
                f"{'first' if end == 0 else 'last'} choice of categoricals)"
            )
            try:
                cfg = self.apply_values(self.base_config(), values, transfer=False)
                backbone = cfg.model.get("backbone")
                if isinstance(backbone, Mapping) and backbone.get("type") == "FlexResNet":
                    FlexResNet.stage_channels_for(**backbone)
            except NasdetError as exc:
                raise error_at(f"{where} cannot build: {exc}", self._fname, "dimensions") from None
            for strategy in strategies:
                with_transfer = {**values, sdim.name: strategy}
                for dim in self.dimensions:
                    if (dim.target or "").startswith("transfer.") and dim.is_active(with_transfer):
                        with_transfer[dim.name] = dim.slots[0].extremes()[end]
                try:
                    self.apply_values(self.base_config(), with_transfer, transfer=True)
                except NasdetError as exc:
                    raise error_at(
                        f"{where} with transfer {strategy!r} cannot build: {exc.message}",
                        self._fname,
                        sdim.key,
                    ) from None

    # ------------------------------------------------------------------ configs
    def raw_base_config(self) -> Config:
        """The base config as loaded, before ``base_options`` (a copy)."""
        return copy.deepcopy(self._base_raw)

    def base_config(self) -> Config:
        """The base config with ``base_options`` applied (a copy)."""
        return copy.deepcopy(self._base)

    def apply_base_options(self, cfg: Config) -> Config:
        """Merge the space's ``base_options`` into ``cfg`` (in place)."""
        if self._base_options:
            cfg.merge_from_dict(copy.deepcopy(self._base_options))
        return cfg

    def apply_values(
        self,
        cfg: Config,
        values: Mapping[str, Any],
        *,
        transfer: bool = True,
        checkpoint: str | None = None,
    ) -> Config:
        """Write ``{dimension: value}`` into ``cfg`` (edited in place and returned).

        First-class targets first, then ``cfg_key`` dimensions, then the transfer
        strategy (:func:`nasdet.transfer.apply_transfer`) when ``transfer`` is True.
        """
        by_name = {d.name: d for d in self.dimensions}
        target_values = {}
        for name, value in values.items():
            dim = by_name[name]
            if dim.target and not dim.target.startswith("transfer"):
                target_values[dim.target] = (dim, value)
        layout = self.layout
        if layout is not None and isinstance(cfg.model.get("backbone"), Mapping):
            layout = backbone_layout(cfg.model.backbone, file=cfg.filename)
        apply_targets(cfg, target_values, self._present, layout)
        for name, value in values.items():
            dim = by_name[name]
            if dim.cfg_key:
                _set_path(cfg, dim.cfg_key, value)
        strategy_dim = self.strategy_dimension
        if transfer and strategy_dim is not None and strategy_dim.name in values:
            params = {
                by_name[n].target.split(".", 1)[1]: v
                for n, v in values.items()
                if (by_name[n].target or "").startswith("transfer.")
            }
            cfg = _apply_transfer(
                cfg,
                values[strategy_dim.name],
                checkpoint or strategy_dim.checkpoint,
                params,
                file=self._fname,
                key=strategy_dim.key,
            )
            # Precedence base < strategy < searched values: a searched key beats what the
            # strategy wrote (e.g. a searched lr over the fine-tuning lr=0.02), so every
            # cfg_key is set again where the strategy left its parent in place.
            for name, value in values.items():
                dim = by_name[name]
                parent = dim.cfg_key.rpartition(".")[0] if dim.cfg_key else None
                if dim.cfg_key and (not parent or get_path(cfg, parent) is not None):
                    _set_path(cfg, dim.cfg_key, value)
        return cfg

    # ------------------------------------------------------------------ sampling
    @property
    def param_names(self) -> tuple[str, ...]:
        """Every parameter name a trial may be asked for."""
        return tuple(self._slots)

    def suggest(self, trial: TrialLike) -> Candidate:
        """Define-by-run: ask ``trial`` for each active dimension, in file order.

        Only ``trial.suggest_int``, ``suggest_float`` (``step``/``log``) and
        ``suggest_categorical`` are called, so an Optuna trial, ``FixedTrial`` and Ray
        Tune's Optuna search all work. A dimension whose ``condition`` does not hold is
        not suggested.

        Args:
            trial: An Optuna-like trial.

        Returns:
            The :class:`Candidate`.
        """
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for dim in self.dimensions:
            if not dim.is_active(values):
                continue
            value = dim.suggest(trial)
            values[dim.name] = value
            params.update(dim.params_of(value))
        return Candidate(self, params)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """Rebuild a candidate from stored params, checking every value.

        Unlike ``optuna.trial.FixedTrial`` this refuses values the space cannot
        suggest and parameters the space does not use (e.g. of an inactive dimension).

        Args:
            params: ``{parameter: value}`` as in :attr:`Candidate.params`.

        Raises:
            NasdetError: naming the offending parameter.
        """
        trial = _ParamsTrial(params, self._slots, self._fname)
        for name in params:
            if name not in self._slots:
                raise NasdetError("not a parameter of this space", file=self._fname, key=name)
        candidate = self.suggest(trial)
        unused = [p for p in params if p not in trial.used]
        if unused:
            raise NasdetError(
                "given, but its dimension is inactive for these values",
                file=self._fname,
                key=unused[0],
            )
        return candidate

    def default_candidate(self) -> Candidate:
        """The candidate taking each dimension's low end (first choice); for examples."""
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for dim in self.dimensions:
            if not dim.is_active(values):
                continue
            ends = [s.extremes()[0] for s in dim.slots]
            value = ends if dim.per_stage else ends[0]
            values[dim.name] = value
            params.update(dim.params_of(value))
        return self.candidate(params)

    # ------------------------------------------------------------------ budget
    def complexity(self, candidate: Candidate) -> Complexity:
        """See :func:`nasdet.space.complexity.candidate_complexity`."""
        from nasdet.space.complexity import candidate_complexity

        return candidate_complexity(candidate)

    def check_constraints(self, candidate: Candidate) -> tuple[bool, str]:
        """See :func:`nasdet.space.complexity.check_constraints`."""
        from nasdet.space.complexity import check_constraints

        return check_constraints(candidate)

    def describe(self) -> str:
        """One line per dimension: name, target or key, kind and range."""
        lines = [f"space {self.name} (base {self.base_path}, input {list(self.input_size)})"]
        for dim in self.dimensions:
            slot = dim.slots[0]
            rng = (
                list(slot.choices)
                if slot.kind == "categorical"
                else f"[{slot.low}, {slot.high}]" + (f" step {slot.step}" if slot.step else "")
            )
            more = f" x{len(dim.slots)} stages" if dim.per_stage else ""
            cond = f" if {dict(dim.condition)}" if dim.condition else ""
            lines.append(f"  {dim.name}: {dim.target or dim.cfg_key} {dim.kind} {rng}{more}{cond}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SearchSpace(name={self.name!r}, file={self._fname!r}, "
            f"dimensions={[d.name for d in self.dimensions]})"
        )


def _set_path(cfg: Any, path: str, value: Any) -> None:
    parent_path, leaf = path.rsplit(".", 1) if "." in path else ("", path)
    parent = get_path(cfg, parent_path) if parent_path else cfg
    if isinstance(parent, list):
        parent[int(leaf)] = value
    else:
        parent[leaf] = value


def _exclusive(a: Dimension, b: Dimension) -> bool:
    """Whether no candidate has both dimensions active: a shared condition, disjoint values."""
    return any(
        key in b.condition
        and not any(same_value(x, y) for x in a.condition[key] for y in b.condition[key])
        for key in a.condition
    )


def _apply_transfer(
    cfg: Config,
    strategy: str,
    checkpoint: str | None,
    params: Mapping[str, Any],
    *,
    file: str | None,
    key: str,
) -> Config:
    """:func:`nasdet.transfer.apply_transfer`, its errors naming the space's file and key."""
    try:
        out = apply_transfer(cfg, strategy, checkpoint=checkpoint, **dict(params))
    except NasdetError as exc:
        hint = (
            " (give a checkpoint: the dimension's checkpoint key or --checkpoint)"
            if "checkpoint" in str(exc)
            else ""
        )
        raise NasdetError(
            f"transfer strategy {strategy!r}: {exc}{hint}", file=file, key=key
        ) from None
    return cfg if out is None else out
