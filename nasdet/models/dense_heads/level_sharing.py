"""The level-sharing choices shared by the sharing-configurable dense heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from nasdet.errors import NasdetError

#: ``'shared'``: one tower and one set of predictors for all pyramid levels (mmdet's
#: default); ``'shared_tower'``: one tower, per-level predictors; ``'per_level'``:
#: a tower and predictors per level.
LEVEL_SHARING = ("shared", "shared_tower", "per_level")


def check_choice(value: str, choices: Sequence[str], key: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a NasdetError for ``key``.

    Args:
        value: The configured value.
        choices: Allowed values.
        key: The config argument name, for the message.

    Returns:
        ``value``.
    """
    if value not in choices:
        raise NasdetError(f"must be one of {tuple(choices)}, got {value!r}", key=key)
    return value


def num_copies(level_sharing: str, num_levels: int) -> tuple[int, int]:
    """How many towers and predictor sets a level-sharing pattern builds.

    Args:
        level_sharing: One of :data:`LEVEL_SHARING`.
        num_levels: Pyramid levels the head sees.

    Returns:
        ``(towers, predictor_sets)``.

    Example:
        >>> [num_copies(s, 5) for s in LEVEL_SHARING]
        [(1, 1), (1, 5), (5, 5)]
    """
    towers = num_levels if level_sharing == "per_level" else 1
    predictors = 1 if level_sharing == "shared" else num_levels
    return towers, predictors


def pack(modules: Sequence[nn.Module]) -> nn.Module:
    """One module as itself, several as an ``nn.ModuleList`` indexed by level."""
    return modules[0] if len(modules) == 1 else nn.ModuleList(modules)


def pick(module: nn.Module, per_level: bool, level: int) -> nn.Module:
    """The entry for ``level`` of a per-level ModuleList, or the shared module."""
    return module[level] if per_level else module


def check_num_levels(head: nn.Module, level_sharing: str, got: int, expected: int) -> None:
    """Refuse a feature pyramid whose length differs from the head's per-level modules."""
    if level_sharing != "shared" and got != expected:
        raise NasdetError(
            f"{type(head).__name__} with level_sharing={level_sharing!r} has modules for "
            f"{expected} levels (the anchor generator's strides) but got {got} feature maps; "
            "make the neck's num_outs match",
            key="level_sharing",
        )


class LevelIndexedForward:
    """``forward`` that passes each level's index to ``forward_single``.

    Mixed into the sharing heads, which pick their per-level modules by that index.
    The class using it sets ``level_sharing`` and ``num_levels``.
    """

    level_sharing: str
    num_levels: int

    def forward(self, x):
        """Apply ``forward_single`` to each level with its index.

        Args:
            x: Feature maps, one per level.

        Returns:
            The per-level outputs of ``forward_single``, gathered by output.
        """
        from mmdet.models.utils import multi_apply

        check_num_levels(self, self.level_sharing, len(x), self.num_levels)
        return multi_apply(self.forward_single, x, list(range(len(x))))

    def resolve_level(self, level: int | None) -> int:
        """``level``, or 0 when modules are shared and no index was given."""
        if level is not None:
            return level
        if self.level_sharing != "shared":
            raise NasdetError(
                "forward_single needs the level index when modules are per level",
                key="level_sharing",
            )
        return 0
