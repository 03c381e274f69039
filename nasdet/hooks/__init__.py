"""mmengine hooks registered by nasdet (configs import them through custom_imports)."""

from nasdet.hooks.eigenspectrum import EigenspectrumHook, classify_dynamics
from nasdet.hooks.metrics_dump import MetricsDumpHook

__all__ = ["EigenspectrumHook", "MetricsDumpHook", "classify_dynamics"]
