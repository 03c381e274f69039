"""One entry point for tools: generate a synthetic dataset on first use, reuse it after."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nasdet.data.classification import ClassificationSpec, make_classification_dataset
from nasdet.data.detection import DetectionSpec, make_detection_dataset
from nasdet.errors import NasdetError

#: Dataset kinds: name -> (spec class, maker).
DATASET_KINDS: dict[str, tuple[type, Any]] = {
    "detection": (DetectionSpec, make_detection_dataset),
    "classification": (ClassificationSpec, make_classification_dataset),
}


def make_spec(kind: str, **spec_kwargs: Any) -> DetectionSpec | ClassificationSpec:
    """Build the spec of a dataset kind from keyword arguments.

    Args:
        kind: ``"detection"`` or ``"classification"``.
        **spec_kwargs: Fields of :class:`DetectionSpec` or :class:`ClassificationSpec`.

    Raises:
        NasdetError: For an unknown kind, an unknown field or an invalid value.
    """
    if kind not in DATASET_KINDS:
        raise NasdetError(f"unknown dataset kind, expected one of {list(DATASET_KINDS)}", key=kind)
    spec_cls = DATASET_KINDS[kind][0]
    known = {f.name for f in dataclasses.fields(spec_cls)}
    for key in spec_kwargs:
        if key not in known:
            raise NasdetError(
                f"unknown field, expected one of {sorted(known)}", key=f"{spec_cls.__name__}.{key}"
            )
    return spec_cls(**spec_kwargs)


def ensure_dataset(
    kind: str, root: str | Path, *, progress: bool = True, **spec_kwargs: Any
) -> Path:
    """Return ``root`` holding the dataset ``kind`` with the given spec, generating it if absent.

    Args:
        kind: ``"detection"`` or ``"classification"``.
        root: Dataset directory.
        progress: Show a progress bar while generating.
        **spec_kwargs: Spec fields; omitted ones take the spec's defaults.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        NasdetError: For an invalid spec, or if ``root`` holds a different dataset.

    Example:
        >>> import tempfile
        >>> root = ensure_dataset("detection", tempfile.mkdtemp() + "/det",
        ...                       num_train=2, num_val=1, progress=False)
        >>> (root / "annotations" / "val.json").is_file()
        True
    """
    spec = make_spec(kind, **spec_kwargs)
    return DATASET_KINDS[kind][1](root, spec, progress=progress)
