"""Search drivers over nasdet spaces: fidelity-staged trials, Optuna and Ray Tune."""

from nasdet.search.config import Objective, SearchConfig, Stage, load_search_config
from nasdet.search.evaluator import CandidateRejected, TrialEvaluator
from nasdet.search.optuna_driver import OptunaSearch
from nasdet.search.run import run_search

__all__ = [
    "CandidateRejected",
    "Objective",
    "OptunaSearch",
    "SearchConfig",
    "Stage",
    "TrialEvaluator",
    "load_search_config",
    "run_search",
]
