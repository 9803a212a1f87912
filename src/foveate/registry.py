"""Name -> constructor tables, as timm creates models by name."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import FoveateError


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        def wrap(fn):
            self._entries[name] = fn
            return fn

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def create(self, name: str, **kwargs) -> Any:
        if name not in self._entries:
            raise FoveateError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        try:
            return self._entries[name](**kwargs)
        except TypeError as e:
            raise FoveateError(f"bad arguments for {self.kind} {name!r}: {e}") from None
