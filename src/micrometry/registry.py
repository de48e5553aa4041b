"""The one model registry of both jobs: ``register(name)``, ``create(name, **cfg)``, ``list()`` (as timm).

A registry knows the package its built-in entries live in; a look-up imports
the module named after the entry when there is one (``unet-weak`` ->
``unet_weak.py``), and otherwise, as does :meth:`Registry.list`, every module
of that package (:func:`import_submodules`); importing a module registers what
it defines. A new model of either job is
therefore one module in that package with one ``@REGISTRY.register("name")``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from micrometry.errors import InputError


def import_submodules(package: str) -> list[str]:
    """Import every module under ``package`` (sub-packages included); the names imported.

    This is where both jobs discover their built-in models.
    """
    root = importlib.import_module(package)
    names = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


class Registry:
    """Names mapped to factories (classes or functions).

    Parameters
    ----------
    kind : str
        What an entry is, for messages ("depth method").
    package : str, optional
        The package whose modules register the built-in entries; imported on
        the first look-up.

    Examples
    --------
    >>> models = Registry("depth method")
    >>> @models.register("ae")
    ... def make_ae(**cfg):
    ...     return ("ae", cfg)
    >>> models.create("ae", width=3)
    ('ae', {'width': 3})
    >>> models.list()
    ['ae']
    """

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._factories: dict[str, Callable[..., Any]] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a factory under ``name`` (twice is an error)."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def _discover(self, name: str | None = None) -> None:
        """Import the package's modules; for one ``name``, first only the module named after it
        (``unet-weak`` -> ``unet_weak.py``), so that loading a model imports what it needs only."""
        if self._discovered or (name is not None and name in self._factories):
            return
        if name is not None and name.replace("-", "_").isidentifier():
            module = f"{self.package}.{name.replace('-', '_')}"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # the module exists but lacks a dependency: a real error
                    raise
            if name in self._factories:
                return
        self._discovered = True  # first: the modules imported below may look names up
        try:
            import_submodules(self.package)
        except BaseException:
            self._discovered = False
            raise

    def list(self) -> list[str]:
        """The registered names, sorted."""
        self._discover()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory called ``name``.

        Raises
        ------
        InputError
            An unknown name; the message lists the known ones.
        """
        self._discover(name)
        try:
            return self._factories[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.list())}"
            ) from None

    def create(self, name: str, **cfg: Any) -> Any:
        """``factory(**cfg)`` of the entry called ``name``."""
        return self.get(name)(**cfg)

    def __contains__(self, name: object) -> bool:
        self._discover(name if isinstance(name, str) else None)
        return name in self._factories
