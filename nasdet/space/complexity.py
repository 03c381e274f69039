"""The space's complexity budget: parameters and MACs of candidates, cached.

Counted by :mod:`nasdet.models.utils.macs` (what ``params`` and ``macs`` mean is
stated there).

The detector counted is the one the candidate deploys: a transfer strategy that
changes the detector itself without a checkpoint (``scratch``: GroupNorm, mmdet's
4conv1fc box head) is applied; strategies that start from a checkpoint only change
initialisation and freezing, or add training-time modules (a feature-transfer
teacher and its adapters), so the detector is counted without them (and no
checkpoint is needed to count it).

Numbers are cached per candidate key, in memory and optionally in a JSON file written
atomically; the file records the space's fingerprint (its YAML and base config) and is
ignored when the space changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasdet.errors import NasdetError
from nasdet.models.utils.macs import (
    MACS_UNIT,
    PARAMS_UNIT,
    Complexity,
    config_complexity,
)
from nasdet.utils.io import atomic_write_json

if TYPE_CHECKING:
    from mmengine.config import Config

    from nasdet.space.space import Candidate, SearchSpace

__all__ = [
    "ComplexityCache",
    "base_complexity",
    "candidate_complexity",
    "check_constraints",
    "deployed_config",
    "space_fingerprint",
]


# ---------------------------------------------------------------------------- caching
def space_fingerprint(space: SearchSpace) -> str:
    """16 hex digits over the space's YAML mapping and its base config."""
    text = json.dumps(
        {"space": space.raw, "base": space.base_config().to_dict()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ComplexityCache:
    """Complexity by candidate key, in memory and optionally in a JSON file.

    The file is rewritten atomically after each new entry (merging what other
    processes wrote meanwhile), so a killed run leaves a complete file. It is ignored
    when it was written for another space or another version of this one.

    Args:
        path: The JSON file, or None for memory only.
        space: The space whose candidates are cached (for the fingerprint).
    """

    def __init__(self, path: str | Path | None = None, *, space: SearchSpace | None = None):
        self.path = Path(path) if path is not None else None
        self.space_name = space.name if space is not None else None
        self._fingerprint: str | None = None
        self._space = space
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path is not None:
            self._entries.update(self._read())

    @property
    def fingerprint(self) -> str | None:
        """The space's fingerprint (computed once)."""
        if self._fingerprint is None and self._space is not None:
            self._fingerprint = space_fingerprint(self._space)
        return self._fingerprint

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise NasdetError(
                f"unreadable complexity cache ({exc}); delete it to start over", file=self.path
            ) from None
        if not isinstance(data, dict) or data.get("fingerprint") != self.fingerprint:
            return {}
        entries = data.get("entries")
        return dict(entries) if isinstance(entries, dict) else {}

    def get(self, key: str) -> Complexity | None:
        """The cached complexity of ``key``, or None."""
        entry = self._entries.get(key)
        return Complexity.from_dict(entry["complexity"]) if entry else None

    def put(
        self, key: str, complexity: Complexity, params: Mapping[str, Any] | None = None
    ) -> None:
        """Store an entry (and rewrite the file, if any)."""
        self._entries[key] = {"params": dict(params or {}), "complexity": complexity.to_dict()}
        if self.path is None:
            return
        merged = {**self._read(), **self._entries}
        self._entries = merged
        atomic_write_json(
            self.path,
            {
                "space": self.space_name,
                "fingerprint": self.fingerprint,
                "params_unit": PARAMS_UNIT,
                "macs_unit": MACS_UNIT,
                "entries": merged,
            },
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def deployed_config(candidate: Candidate) -> Config:
    """The config whose model :func:`candidate_complexity` counts (see the module doc)."""
    space = candidate.space
    sdim = space.strategy_dimension
    strategy = candidate.values.get(sdim.name) if sdim is not None else None
    known = space.transfer_strategies() if strategy is not None else None
    if known is None or strategy not in known or getattr(known[strategy], "needs_checkpoint", True):
        return candidate.to_config(transfer=False)
    cfg = candidate.to_config(transfer=True)
    model = cfg.model
    while isinstance(model, Mapping) and "detector" in model and "backbone" not in model:
        model = model["detector"]  # transfer wrappers hold the detector under `detector`
    cfg.model = model
    return cfg


def candidate_complexity(candidate: Candidate, cache: ComplexityCache | None = None) -> Complexity:
    """Complexity of a candidate's architecture (transfer not applied), cached by key.

    Args:
        candidate: The candidate.
        cache: Defaults to the space's cache (``space.cache``).

    Raises:
        NasdetError: the candidate's model does not build (naming the space file and
            the candidate key).

    Example:
        >>> from nasdet.space import REPO_ROOT, SearchSpace
        >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
        >>> c = candidate_complexity(space.default_candidate())
        >>> c.input_size
        (128, 128)
    """
    cache = candidate.space.cache if cache is None else cache
    found = cache.get(candidate.key)
    if found is not None:
        return found
    space = candidate.space
    cfg = deployed_config(candidate)
    try:
        result = config_complexity(cfg, space.input_size)
    except NasdetError:
        raise
    except Exception as exc:  # a model that does not build: report the candidate
        raise NasdetError(
            f"candidate {candidate.key} {dict(candidate.params)} does not "
            f"build: {type(exc).__name__}: {exc}",
            file=space.file,
            key="dimensions",
        ) from exc
    cache.put(candidate.key, result, candidate.params)
    return result


def base_complexity(space: SearchSpace, cache: ComplexityCache | None = None) -> Complexity:
    """Complexity of the space's base config (with ``base_options``), cached as ``base``."""
    cache = space.cache if cache is None else cache
    found = cache.get("base")
    if found is None:
        found = config_complexity(space.base_config(), space.input_size)
        cache.put("base", found)
    return found


def check_constraints(
    candidate: Candidate, cache: ComplexityCache | None = None
) -> tuple[bool, str]:
    """Check a candidate against its space's ``constraints`` before any training.

    Args:
        candidate: The candidate.
        cache: Defaults to the space's cache.

    Returns:
        ``(ok, reason)``: ``reason`` lists every limit exceeded, or says the candidate
        is within budget, with the numbers.

    Example:
        >>> from nasdet.space import REPO_ROOT, SearchSpace
        >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
        >>> ok, reason = check_constraints(space.default_candidate())
        >>> ok
        True
    """
    space = candidate.space
    limits = space.constraints
    if limits.empty:
        return True, "no constraints"
    c = candidate_complexity(candidate, cache)
    h, w = c.input_size
    over = []
    if limits.max_params is not None and c.params > limits.max_params:
        over.append(f"params {c.params:,} > max_params {limits.max_params:,.0f}")
    if limits.max_macs is not None and c.macs > limits.max_macs:
        over.append(f"MACs {c.macs:,} > max_macs {limits.max_macs:,.0f} (at {h}x{w})")
    if limits.needs_base:
        base = base_complexity(space, cache)
        for name, value, base_value, ratio in (
            ("params", c.params, base.params, limits.max_params_ratio),
            ("MACs", c.macs, base.macs, limits.max_macs_ratio),
        ):
            if ratio is not None and value > ratio * base_value:
                field = "max_params_ratio" if name == "params" else "max_macs_ratio"
                over.append(
                    f"{name} {value:,} > {field} {ratio:g} x base {base_value:,} "
                    f"= {ratio * base_value:,.0f}"
                )
    if over:
        return False, "; ".join(over)
    return True, f"within budget (params {c.params:,}, MACs {c.macs:,} at {h}x{w})"
