"""mmengine hooks registered by nasdet (configs import them through custom_imports)."""

from nasdet.hooks.eigenspectrum import EigenspectrumHook, classify_dynamics
from nasdet.hooks.metrics_dump import MetricsDumpHook
from nasdet.hooks.trial_report import TrialReportHook, trial_reporter

__all__ = ["EigenspectrumHook", "MetricsDumpHook", "TrialReportHook", "classify_dynamics",
           "trial_reporter"]
