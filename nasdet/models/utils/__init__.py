"""Helpers for width-flexible and weight-shared models."""

from nasdet.models.utils.make_divisible import make_divisible
from nasdet.models.utils.param_count import count_parameters
from nasdet.models.utils.sliced_state_dict import (
    SlicedLoadResult,
    leading_slice,
    load_sliced_state_dict,
)

__all__ = [
    "SlicedLoadResult",
    "count_parameters",
    "leading_slice",
    "load_sliced_state_dict",
    "make_divisible",
]
