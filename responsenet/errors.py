"""Exceptions shared across the package.

Every failure a user can cause or meet carries a snake_case ``reason`` code, so that reports can
count failures by kind (``not_found``, ``too_short``, ``no_face``, ...).
"""

from __future__ import annotations


class ResponseNetError(Exception):
    """Base class for errors raised by responsenet."""


class UsageError(ResponseNetError):
    """Bad input from the user (manifest, config, CLI arguments); the CLI exits with 2."""


class StageFailure(ResponseNetError):
    """One item failed in one stage; the runner records it and other items go on.

    Args:
        reason: snake_case reason code, e.g. ``not_found`` or ``too_short``.
        message: what was expected, what was found, and how to fix it, in the user's terms.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # keep reason across process boundaries
        return (type(self), (self.reason, self.message))


class AssetMissing(StageFailure):
    """A model weight could not be found; the message names the asset and how to supply it."""

    def __init__(self, reason: str = "weights_missing", message: str = ""):
        super().__init__(reason, message)
