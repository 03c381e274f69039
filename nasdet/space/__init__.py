"""Search spaces that generate MMDetection detectors.

A YAML file (``search_spaces/*.yaml``; format in :mod:`nasdet.space.schema`) names a
base config and dimensions over widths, parameter sharing, transfer strategies and any
config key. :class:`SearchSpace` checks it when loading, suggests a :class:`Candidate`
define-by-run from any trial with Optuna's ``suggest_*`` methods, and turns candidates
into standalone mmengine configs; :mod:`nasdet.space.complexity` counts their
parameters and MACs and checks them against the space's budget before training.

Example:
    >>> import optuna
    >>> from nasdet.space import REPO_ROOT, SearchSpace
    >>> space = SearchSpace.from_yaml(REPO_ROOT / "search_spaces/tiny_synth.yaml")
    >>> sampler = optuna.samplers.RandomSampler(seed=0)
    >>> candidate = space.suggest(optuna.create_study(sampler=sampler).ask())
    >>> cfg = candidate.to_config(transfer=False)
    >>> cfg.model.neck.out_channels == cfg.model.rpn_head.in_channels
    True
"""

from nasdet.space.complexity import ComplexityCache, candidate_complexity, check_constraints
from nasdet.space.schema import KINDS, Constraints, Dimension, Slot
from nasdet.space.space import REPO_ROOT, Candidate, SearchSpace
from nasdet.space.targets import FOLLOWERS, TARGETS, Target

__all__ = [
    "FOLLOWERS",
    "KINDS",
    "REPO_ROOT",
    "TARGETS",
    "Candidate",
    "ComplexityCache",
    "Constraints",
    "Dimension",
    "SearchSpace",
    "Slot",
    "Target",
    "candidate_complexity",
    "check_constraints",
]
