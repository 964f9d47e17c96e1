"""The one error type for checkpoint problems: which file, which key, what was expected."""
from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint directory is missing something or does not match the model it describes."""

    def __init__(self, message: str, file=None, key: str | None = None, expected=None, found=None):
        self.file, self.key, self.expected, self.found = file, key, expected, found
        parts = [message]
        if file is not None:
            parts.append(f"file: {file}")
        if key is not None:
            parts.append(f"key: {key}")
        if expected is not None or found is not None:
            parts.append(f"expected: {expected}, found: {found}")
        super().__init__("; ".join(parts))
