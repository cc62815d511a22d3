"""One registry mechanism for stages, backends, metrics, baselines and assets.

Targets are registered as ``"package.module:attr"`` strings and imported only when asked for,
so that heavy libraries load only when the thing that needs them is chosen.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Generic, TypeVar

from responsenet.errors import UsageError

T = TypeVar("T")


def import_target(spec: str) -> object:
    """Import ``"package.module:attr"`` (attr may be dotted) and return the attribute."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected 'package.module:Name', got {spec!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import module {module_name!r} for {spec!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from e
    return obj


class Registry(Generic[T]):
    """Names mapped to lazily imported targets, with did-you-mean errors.

    Args:
        kind: what the registry holds, used in messages ("stage", "metric", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._planned: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str) -> None:
        """Register ``name`` for the ``"module:attr"`` target; each name is declared once."""
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._targets[name] = target

    def add(self, name: str, obj: T) -> None:
        """Register an object that is cheap to hold (plain data such as an asset record)."""
        self.register(name, f"<object {name}>")
        self._loaded[name] = obj

    def plan(self, name: str, where: str) -> None:
        """Declare a name that a later version provides; asking for it says so clearly."""
        self._planned[name] = where

    def names(self) -> list[str]:
        return list(self._targets)

    def is_planned(self, name: str) -> bool:
        return name in self._planned and name not in self._targets

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def get(self, name: str) -> T:
        """Return the target registered as ``name``, importing it on first use."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._targets:
            raise UsageError(self.unknown_message(name))
        obj = import_target(self._targets[name])
        self._loaded[name] = obj  # type: ignore[assignment]
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        if name in self._planned:
            return f"not available yet: {self.kind} {name!r} ({self._planned[name]})"
        known = self.names()
        close = difflib.get_close_matches(name, known + list(self._planned), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(known) or 'none'}."
