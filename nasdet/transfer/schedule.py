"""The schedule rule of transfer strategies: how a requested length meets a recipe."""

from __future__ import annotations

from mmengine.config import Config

from nasdet.errors import NasdetError
from nasdet.transfer.strategies import STRATEGIES
from nasdet.utils.schedule import set_schedule_length


def schedule_factor(cfg: Config) -> float:
    """The schedule rule of the strategies ``cfg`` records: how many times a length.

    A tool that sets the length of a run (a search stage's ``epochs``, ``--epochs`` of
    the study and of the comparison) asks for epochs of the *base* recipe; a strategy
    whose recipe trains longer multiplies them (``scratch``: ``schedule_factor``, mmdet's
    "6x"). Strategies applied on top of one another (``transfer.previous``) multiply.

    Args:
        cfg: A config, with or without a ``transfer`` record.

    Returns:
        The multiplier (1.0 without a record or for strategies that keep the length).
    """
    factor = 1.0
    record = cfg.get("transfer")
    while isinstance(record, dict):
        spec = STRATEGIES.get(record.get("type"))
        if spec is not None and spec.schedule_key:
            value = record.get(spec.schedule_key, spec.defaults()[spec.schedule_key])
            factor *= float(value)
        record = record.get("previous")
    return factor


def set_training_length(cfg: Config, epochs: int) -> int:
    """Train ``epochs`` epochs of the base recipe, scaled by the config's schedule rule.

    The one place where a requested length meets a strategy: the run gets
    ``max(1, round(epochs * schedule_factor(cfg)))`` epochs (or iterations) and the
    scheduler is rescaled with it (:func:`set_schedule_length`).

    Args:
        cfg: Config to edit in place.
        epochs: Length in epochs of the base recipe.

    Returns:
        The length set.

    Example:
        >>> cfg = Config(dict(train_cfg=dict(max_epochs=16), transfer=dict(type='scratch',
        ...     schedule_factor=6.0), param_scheduler=[dict(type='MultiStepLR', end=16,
        ...     milestones=[12, 15])]))
        >>> set_training_length(cfg, 2), cfg.param_scheduler[0].milestones
        (12, [9, 11])
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise NasdetError(f"must be a positive integer, got {epochs!r}", key="epochs")
    length = max(1, round(epochs * schedule_factor(cfg)))
    set_schedule_length(cfg, length)
    return length
