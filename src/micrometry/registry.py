"""A tiny model registry with one ``create(name, **cfg)`` factory, as in timm.

Both jobs register their methods here so that the CLI, the benchmarks and the
run folders refer to models by name only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from micrometry.errors import InputError


class Registry:
    """Names mapped to factories.

    Examples
    --------
    >>> models = Registry("depth method")
    >>> @models.register("ae")
    ... def make_ae(**cfg):
    ...     return ("ae", cfg)
    >>> models.create("ae", width=3)
    ('ae', {'width': 3})
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **cfg: Any) -> Any:
        return self.get(name)(**cfg)

    def __contains__(self, name: str) -> bool:
        return name in self._factories
