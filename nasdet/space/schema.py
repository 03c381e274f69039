"""The YAML schema of a search space: parsing and the checks that need no base config.

A space file is a mapping with these top-level keys (everything else is refused):

``name``
    Short name of the space (default: the file's stem); part of every candidate's key.
``description``
    Free text.
``base``
    The config every candidate starts from: a path relative to the YAML file, or to
    the repository root, or ``mmdet::...``.
``base_options``
    Optional ``{dotted.key: value}`` applied to the base first, like ``--cfg-options``.
``input_size``
    ``[H, W]`` (or one number for a square) of the network input at which MACs are
    counted; a multiple of the data preprocessor's ``pad_size_divisor``.
``constraints``
    Optional budget: ``max_params``, ``max_macs`` (absolute numbers) and/or
    ``max_params_ratio``, ``max_macs_ratio`` (relative to the base config's model).
``dimensions``
    An ordered mapping ``name -> dimension``; see :class:`Dimension` for the keys of
    one dimension and :mod:`nasdet.space.targets` for what ``target`` can name.

PyYAML reads ``1e6`` (no dot) as a string; every numeric field here accepts such
strings too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nasdet.errors import NasdetError

__all__ = [
    "KINDS",
    "Constraints",
    "Dimension",
    "Slot",
    "TrialLike",
]

#: Dimension kinds and the Optuna call each one makes.
KINDS = ("int", "float", "logfloat", "categorical")

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "base",
    "base_options",
    "input_size",
    "constraints",
    "dimensions",
)
CONSTRAINT_KEYS = ("max_params", "max_macs", "max_params_ratio", "max_macs_ratio")
DIMENSION_KEYS = (
    "target",
    "cfg_key",
    "kind",
    "low",
    "high",
    "step",
    "choices",
    "per_stage",
    "divisor",
    "condition",
    "checkpoint",
    "description",
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TrialLike(Protocol):
    """What :meth:`SearchSpace.suggest` needs of a trial: Optuna's ``suggest_*`` calls.

    ``optuna.trial.Trial``, ``optuna.trial.FixedTrial`` and Ray Tune's Optuna adapter
    all provide them.
    """

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def error_at(message: str, file: str | Path | None, key: str | None) -> NasdetError:
    """A :class:`NasdetError` about the space file ``file`` at dotted ``key``."""
    return NasdetError(message, file=file, key=key)


# ---------------------------------------------------------------------------- numbers
def as_number(value: Any, file: str | Path | None, key: str, *, integer: bool = False) -> float:
    """``value`` as an int (``integer=True``) or a float; numeric strings are accepted.

    Raises:
        NasdetError: not a number (booleans are not numbers here), or not an integer.
    """
    if isinstance(value, str):
        try:
            value = float(value) if not integer else _int_from_str(value)
        except ValueError:
            raise error_at(f"expected a number, got {value!r}", file, key) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error_at(f"expected a number, got {value!r}", file, key)
    if not math.isfinite(value):
        raise error_at(f"expected a finite number, got {value!r}", file, key)
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise error_at(f"expected an integer, got {value!r}", file, key)
        return int(value)
    return float(value)


def _int_from_str(text: str) -> int:
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def _is_choice_value(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


# ---------------------------------------------------------------------------- slots
@dataclass(frozen=True)
class Slot:
    """One value a trial suggests: an Optuna parameter.

    Args:
        param: The parameter name (``dim`` or ``dim.i`` for stage ``i``).
        kind: One of :data:`KINDS`.
        low: Lower end (numeric kinds).
        high: Upper end (numeric kinds), inclusive.
        step: Grid step (``int``: default 1; ``float``: optional).
        choices: The values of a ``categorical`` slot.
    """

    param: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: TrialLike) -> Any:
        """Ask ``trial`` for this slot's value through ``trial.suggest_*``."""
        if self.kind == "int":
            return int(
                trial.suggest_int(
                    self.param, int(self.low), int(self.high), step=int(self.step or 1)
                )
            )
        if self.kind == "float":
            return float(
                trial.suggest_float(self.param, float(self.low), float(self.high), step=self.step)
            )
        if self.kind == "logfloat":
            return float(
                trial.suggest_float(self.param, float(self.low), float(self.high), log=True)
            )
        return trial.suggest_categorical(self.param, list(self.choices))

    def values(self) -> list[Any]:
        """Every value of a discrete slot (categorical, int, float with a step)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "float" and self.step:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        raise ValueError(f"slot {self.param} is continuous")

    def extremes(self) -> tuple[Any, Any]:
        """The lowest and highest value (first and last choice of a categorical)."""
        if self.kind == "categorical":
            return self.choices[0], self.choices[-1]
        return self.low, self.high

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this slot can suggest."""
        if self.kind == "categorical":
            return any(same_value(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.kind == "int":
            return (
                float(value).is_integer()
                and (int(value) - int(self.low)) % int(self.step or 1) == 0
            )
        if self.kind == "float" and self.step:
            n = (value - self.low) / self.step
            return abs(n - round(n)) < 1e-6
        return True


# ---------------------------------------------------------------------------- dimensions
@dataclass(frozen=True)
class Dimension:
    """One entry of ``dimensions:`` in a space file.

    YAML keys of a dimension:

    * ``target`` (a first-class target, see :mod:`nasdet.space.targets`) **or**
      ``cfg_key`` (any config key by dotted path, list indices as numbers:
      ``optim_wrapper.optimizer.lr``, ``param_scheduler.1.milestones``);
    * ``kind``: ``int`` (``low``, ``high``, ``step``), ``float`` (``low``, ``high``,
      optional ``step``), ``logfloat`` (``0 < low < high``, sampled log-uniformly),
      ``categorical`` (``choices``); may be left out when ``choices`` is given;
    * ``per_stage`` (per-stage backbone targets only, default true): one parameter per
      stage, named ``<name>.<stage>``; ``low``/``high``/``step`` may then be lists with
      one entry per stage and ``choices`` a list of per-stage lists. ``false`` draws
      one value for every stage;
    * ``divisor`` (channel targets): every value must be a multiple of it (absolute
      widths), or widths derived from multipliers are rounded to it with
      :func:`~nasdet.models.utils.make_divisible`; default: the backbone's ``divisor``
      for backbone targets, 8 otherwise;
    * ``condition``: ``{other_dimension: value or [values]}``; the dimension is active
      only when every named dimension (defined earlier in the file, one value, itself
      active) has one of the given values. An inactive dimension suggests nothing and
      leaves the base config's value;
    * ``checkpoint`` (``target: transfer`` only): the checkpoint passed to
      ``apply_transfer`` (path relative to the YAML file or the repository root);
    * ``description``: free text.

    Args:
        name: The key under ``dimensions``.
        target: First-class target name, or None for a ``cfg_key`` dimension.
        cfg_key: Dotted config key, or None.
        kind: One of :data:`KINDS`.
        slots: One slot (scalar) or one per stage.
        per_stage: Whether each stage has its own slot.
        num_stages: Stages a per-stage target covers (1 for scalar targets).
        divisor: Channel divisor (channel targets), else None.
        condition: ``{dimension: allowed values}``.
        checkpoint: Transfer checkpoint (``target: transfer``), or None.
        file: The space file, for messages.
    """

    name: str
    target: str | None
    cfg_key: str | None
    kind: str
    slots: tuple[Slot, ...]
    per_stage: bool = False
    num_stages: int = 1
    divisor: int | None = None
    condition: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    checkpoint: str | None = None
    file: str | None = None

    @property
    def key(self) -> str:
        """``dimensions.<name>``: where this dimension is in the YAML file."""
        return f"dimensions.{self.name}"

    @property
    def params(self) -> tuple[str, ...]:
        """The parameter names this dimension suggests."""
        return tuple(s.param for s in self.slots)

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values of earlier active dimensions."""
        for other, allowed in self.condition.items():
            if other not in values or not any(same_value(values[other], a) for a in allowed):
                return False
        return True

    def suggest(self, trial: TrialLike) -> Any:
        """The dimension's value: a scalar, or a per-stage list.

        A ``per_stage: false`` dimension of a per-stage target yields one scalar that
        the target broadcasts to every stage.
        """
        values = [slot.suggest(trial) for slot in self.slots]
        return values if self.per_stage else values[0]

    def stage_values(self, value: Any) -> list[Any]:
        """``value`` as one entry per stage (a scalar is repeated)."""
        if self.per_stage:
            return list(value)
        return [value] * self.num_stages

    def params_of(self, value: Any) -> dict[str, Any]:
        """The ``{param: value}`` entries of ``value``."""
        if self.per_stage:
            return {s.param: v for s, v in zip(self.slots, value, strict=True)}
        return {self.slots[0].param: value}

    def stage_values_set(self, stage: int) -> list[Any]:
        """Every value ``stage`` can get (discrete slots only)."""
        return self.slots[stage if self.per_stage else 0].values()


def same_value(a: Any, b: Any) -> bool:
    """Equal values, with booleans never equal to 0 or 1 (as a YAML condition means them)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


@dataclass(frozen=True)
class Constraints:
    """A space's budget. Absolute limits are counts; ratios are relative to the base.

    Args:
        max_params: Most unique parameters (scalars).
        max_macs: Most multiply-accumulates per image at the space's ``input_size``.
        max_params_ratio: Most parameters as a multiple of the base config's model.
        max_macs_ratio: Most MACs as a multiple of the base config's model.
    """

    max_params: float | None = None
    max_macs: float | None = None
    max_params_ratio: float | None = None
    max_macs_ratio: float | None = None

    @property
    def empty(self) -> bool:
        """No limit at all."""
        return all(getattr(self, k) is None for k in CONSTRAINT_KEYS)

    @property
    def needs_base(self) -> bool:
        """Whether a ratio limit needs the base model's complexity."""
        return self.max_params_ratio is not None or self.max_macs_ratio is not None


# ---------------------------------------------------------------------------- parsing
def check_mapping(
    value: Any, file: str | Path | None, key: str | None, allowed: Sequence[str] | None = None
) -> Mapping[str, Any]:
    """``value`` must be a mapping with string keys from ``allowed`` (any if None)."""
    if not isinstance(value, Mapping):
        raise error_at(f"expected a mapping, got {type(value).__name__}", file, key)
    for k in value:
        sub = f"{key}.{k}" if key else str(k)
        if not isinstance(k, str):
            raise error_at("keys must be strings", file, sub)
        if allowed is not None and k not in allowed:
            raise error_at(f"unknown key; expected one of {', '.join(allowed)}", file, sub)
    return value


def parse_constraints(raw: Any, file: str | Path | None) -> Constraints:
    """Parse ``constraints:`` (absent or null: no budget)."""
    if raw is None:
        return Constraints()
    check_mapping(raw, file, "constraints", CONSTRAINT_KEYS)
    values = {}
    for k, v in raw.items():
        number = as_number(v, file, f"constraints.{k}")
        if not number > 0:
            raise error_at(f"must be positive, got {v!r}", file, f"constraints.{k}")
        values[k] = number
    return Constraints(**values)


def parse_input_size(raw: Any, file: str | Path | None) -> tuple[int, int]:
    """Parse ``input_size``: one positive integer or ``[H, W]``."""
    if raw is None:
        raise error_at(
            "required: the [H, W] input size at which MACs are counted", file, "input_size"
        )
    items = [raw, raw] if not isinstance(raw, (list, tuple)) else list(raw)
    if len(items) != 2:
        raise error_at(f"expected [H, W] or one number, got {raw!r}", file, "input_size")
    size = tuple(int(as_number(v, file, "input_size", integer=True)) for v in items)
    if min(size) < 1:
        raise error_at(f"sizes must be positive, got {raw!r}", file, "input_size")
    return size  # type: ignore[return-value]


def check_name(name: Any, file: str | Path | None) -> str:
    """A dimension name: an identifier (it prefixes Optuna parameter names)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise error_at(
            "dimension names must be identifiers (letters, digits, underscores; no dots)",
            file,
            f"dimensions.{name}",
        )
    return name


def _per_stage_field(raw: Any, n: int, per_stage: bool, file, key: str) -> list[Any]:
    """A per-stage field: a scalar repeated, or a list of exactly ``n`` entries."""
    if isinstance(raw, (list, tuple)):
        if not per_stage:
            raise error_at("a list needs per_stage: true (one entry per stage)", file, key)
        if len(raw) != n:
            raise error_at(
                f"expected {n} entries (one per backbone stage), got {len(raw)}", file, key
            )
        return list(raw)
    return [raw] * (n if per_stage else 1)


def parse_slots(
    raw: Mapping[str, Any],
    kind: str,
    param: str,
    n: int,
    per_stage: bool,
    file: str | Path | None,
    key: str,
) -> tuple[Slot, ...]:
    """Build and check the slots of one dimension (ranges, steps, choices)."""
    count = n if per_stage else 1
    names = [f"{param}.{i}" for i in range(count)] if per_stage else [param]
    if kind == "categorical":
        for k in ("low", "high", "step"):
            if k in raw:
                raise error_at(
                    "categorical dimensions take choices, not ranges", file, f"{key}.{k}"
                )
        choices = raw.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise error_at("expected a non-empty list", file, f"{key}.choices")
        nested = all(isinstance(c, (list, tuple)) for c in choices)
        if nested:
            per = _per_stage_field(list(choices), n, per_stage, file, f"{key}.choices")
        elif any(isinstance(c, (list, tuple)) for c in choices):
            raise error_at(
                "mix of lists and values: give per-stage lists for every stage",
                file,
                f"{key}.choices",
            )
        else:
            per = [choices] * count
        slots = []
        for i, (name, opts) in enumerate(zip(names, per, strict=True)):
            sub = f"{key}.choices[{i}]" if nested else f"{key}.choices"
            if not isinstance(opts, (list, tuple)) or not opts:
                raise error_at("expected a non-empty list", file, sub)
            for j, c in enumerate(opts):
                if not _is_choice_value(c):
                    raise error_at(
                        f"choices must be numbers, strings, booleans or null, got {c!r}",
                        file,
                        f"{sub}[{j}]",
                    )
            if len({repr(c) for c in opts}) != len(opts):
                raise error_at("choices must be distinct", file, sub)
            slots.append(Slot(name, kind, choices=tuple(opts)))
        return tuple(slots)

    if "choices" in raw:
        raise error_at(f"a {kind} dimension takes low/high, not choices", file, f"{key}.choices")
    for k in ("low", "high"):
        if k not in raw:
            raise error_at(f"required for kind {kind}", file, f"{key}.{k}")
    if kind == "logfloat" and "step" in raw:
        raise error_at("logfloat dimensions have no step", file, f"{key}.step")
    integer = kind == "int"
    lows = _per_stage_field(raw["low"], n, per_stage, file, f"{key}.low")
    highs = _per_stage_field(raw["high"], n, per_stage, file, f"{key}.high")
    steps = _per_stage_field(
        raw.get("step", 1 if integer else None), n, per_stage, file, f"{key}.step"
    )
    slots = []
    for name, lo, hi, st in zip(names, lows, highs, steps, strict=True):
        lo = as_number(lo, file, f"{key}.low", integer=integer)
        hi = as_number(hi, file, f"{key}.high", integer=integer)
        if st is not None:
            st = as_number(st, file, f"{key}.step", integer=integer)
            if not st > 0:
                raise error_at(f"must be positive, got {st!r}", file, f"{key}.step")
        if lo > hi:
            raise error_at(f"low ({lo}) is above high ({hi})", file, f"{key}.high")
        if kind == "logfloat" and not lo > 0:
            raise error_at(f"must be positive for a logfloat, got {lo!r}", file, f"{key}.low")
        if kind == "logfloat" and lo == hi:
            raise error_at("low and high must differ for a logfloat", file, f"{key}.high")
        if st is not None:
            n_steps = (hi - lo) / st
            if abs(n_steps - round(n_steps)) > 1e-9:
                raise error_at(
                    f"high ({hi}) must be low ({lo}) plus a whole number of steps ({st})",
                    file,
                    f"{key}.high",
                )
        slots.append(Slot(name, kind, low=lo, high=hi, step=st))
    return tuple(slots)


def parse_condition(raw: Any, file: str | Path | None, key: str) -> dict[str, tuple[Any, ...]]:
    """``{dimension: value or [values]}`` with the values as tuples (checked later)."""
    if raw is None:
        return {}
    check_mapping(raw, file, key)
    if not raw:
        raise error_at("empty condition", file, key)
    out = {}
    for other, allowed in raw.items():
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values:
            raise error_at("expected a value or a non-empty list", file, f"{key}.{other}")
        out[other] = values
    return out


def check_conditions(dims: Sequence[Dimension], file: str | Path | None) -> None:
    """Every condition names an earlier scalar dimension and values it can take."""
    seen: dict[str, Dimension] = {}
    names = {d.name for d in dims}
    for dim in dims:
        for other, allowed in dim.condition.items():
            key = f"{dim.key}.condition.{other}"
            if other not in names:
                raise error_at(f"names no dimension of this space ('{other}')", file, key)
            if other not in seen:
                raise error_at(
                    f"'{other}' must be defined before '{dim.name}' (conditions refer to "
                    "earlier dimensions)",
                    file,
                    key,
                )
            ref = seen[other]
            if len(ref.slots) != 1:
                raise error_at(
                    f"'{other}' has one value per stage; conditions need a "
                    "dimension with one value",
                    file,
                    key,
                )
            for value in allowed:
                if not ref.slots[0].contains(value):
                    raise error_at(f"'{other}' can never be {value!r}", file, key)
        seen[dim.name] = dim
