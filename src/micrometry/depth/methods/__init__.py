"""Depth-from-SEM methods behind one interface (see :mod:`micrometry.depth.methods.base`).

Every module of this package registers its methods in :data:`DEPTH_METHODS` when
imported; :func:`create_method`, :func:`method_names` and :func:`load_method`
import them all first.
"""

from micrometry.depth.methods.base import (
    DEFAULT_METHOD,
    DEPTH_METHODS,
    DepthData,
    DepthMethod,
    create_method,
    load_method,
    method_names,
    train_method,
)

__all__ = [
    "DEFAULT_METHOD",
    "DEPTH_METHODS",
    "DepthData",
    "DepthMethod",
    "create_method",
    "load_method",
    "method_names",
    "train_method",
]
