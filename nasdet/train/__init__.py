"""Training and testing through mmengine's Runner, with nasdet's pre-flight checks."""

from nasdet.train.config import load_config, prepare_data, set_data_root
from nasdet.train.runner import build_runner, evaluate, train

__all__ = ["build_runner", "load_config", "prepare_data", "set_data_root", "evaluate", "train"]
