"""Depth-from-SEM methods behind one interface (see :mod:`micrometry.depth.methods.base`).

Every module of this package registers its methods in :data:`DEPTH_METHODS` when
imported; the registry imports them all on its first look-up
(``DEPTH_METHODS.create(name, **cfg)``, ``DEPTH_METHODS.list()``).
:func:`load_depth_model` is the one loader of a trained method.
"""

from micrometry.depth.methods.base import (
    DEFAULT_METHOD,
    DEPTH_METHODS,
    DepthData,
    DepthMethod,
    load_depth_model,
    train_method,
)

__all__ = [
    "DEFAULT_METHOD",
    "DEPTH_METHODS",
    "DepthData",
    "DepthMethod",
    "load_depth_model",
    "train_method",
]
