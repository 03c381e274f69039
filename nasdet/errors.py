"""The one exception type users see.

Errors a user can cause (a bad YAML key, a missing file, incompatible options, a
checkpoint of another architecture) are raised as :class:`NasdetError` with the file
and key they concern, so command-line tools can print one clear line instead of a
traceback.
"""

from __future__ import annotations

from pathlib import Path


class NasdetError(Exception):
    """A user-facing error naming the file and/or key it concerns.

    Args:
        message: What is wrong and, where possible, how to fix it.
        file: The file the error concerns (config, YAML, checkpoint, dataset).
        key: The key, option, layer name or pattern inside that file.

    Example:
        >>> str(NasdetError("must be a multiple of 8", file="space.yaml", key="widths.stage1"))
        'space.yaml: widths.stage1: must be a multiple of 8'
    """

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join([*parts, self.message])
