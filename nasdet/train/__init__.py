"""Training and testing through mmengine's Runner, with nasdet's pre-flight checks."""

from nasdet.train.config import load_config
from nasdet.train.runner import build_runner, evaluate, train

__all__ = ["build_runner", "evaluate", "load_config", "train"]
