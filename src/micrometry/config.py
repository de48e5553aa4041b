"""Dataclass configurations checked by their fields: one rule for both jobs' hyper-parameters.

A configuration is a dataclass deriving from :class:`Config`; each field's type
annotation says what it holds and :func:`param` adds its allowed range or
choices. Building one (``UNetConfig(width=0)``, or :func:`make_config` from the
``--param KEY=VALUE`` pairs or a run folder's ``config.json``) checks every
field and refuses a bad value with a one-line :class:`~micrometry.errors.InputError`.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass
... class Tiny(Config):
...     width: int = param(8, ge=1)
...     lr: float = param(1e-3, ge=0)
>>> make_config(Tiny, {"width": 4.0}, "method 'tiny'")
Tiny(width=4, lr=0.001)
>>> make_config(Tiny, {"width": 0}, "method 'tiny'")
Traceback (most recent call last):
...
micrometry.errors.InputError: method 'tiny': parameter width must be at least 1, not 0
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from micrometry.errors import InputError


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with its default and allowed values.

    Parameters
    ----------
    default
        The default (a list is copied for every instance).
    ge, gt, le, lt : float, optional
        Bounds of a number: at least, above, at most, below.
    choices : sequence, optional
        The only values allowed.
    """
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class FieldError(InputError):
    """One field's value is refused; ``key`` and ``problem`` let a caller name the owner."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"parameter {key} {problem}")


@dataclasses.dataclass
class Config:
    """Base of checked configurations: every field is validated (and numbers coerced) on construction."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            value = check_value(f.name, hints[f.name], getattr(self, f.name), f.metadata)
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; ``make_config(type(c), c.to_dict(), ...)`` rebuilds ``c``."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def make_config(cls: type[Config], values: Mapping[str, Any], owner: str) -> Config:
    """``cls(**values)``, refusing unknown keys and bad values in one line that names ``owner``.

    Raises
    ------
    InputError
        ``"{owner} has no parameter(s) ..."`` or ``"{owner}: parameter KEY must be ..."``.
    """
    if "__dataclass_fields__" not in vars(cls):  # a subclass without @dataclass would drop its own fields
        raise TypeError(f"{cls.__qualname__} must be decorated with @dataclass")
    known = cls.field_names()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(
            f"{owner} has no parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}"
        )
    try:
        return cls(**values)
    except FieldError as exc:
        raise InputError(f"{owner}: parameter {exc.key} {exc.problem}") from None


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(key: str, hint: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` checked against the field's type ``hint`` and range ``meta``; numbers coerced.

    Raises
    ------
    FieldError
        The value has another type or lies outside the range.
    """
    raw = value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise FieldError(key, f"must be a list, not {value!r}")
        item = args[0] if args else Any
        return [check_value(key, item, v, {}) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise FieldError(key, f"must be true or false, not {value!r}")
    elif hint is int:
        if not (_number(value) and math.isfinite(value) and float(value).is_integer()):
            raise FieldError(key, f"must be an integer, not {value!r}")
        value = int(value)
    elif hint is float:
        if not (_number(value) and math.isfinite(value)):
            raise FieldError(key, f"must be a finite number, not {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise FieldError(key, f"must be a string, not {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise FieldError(key, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
    if _number(value):
        _check_range(key, value, raw, meta)
    return value


def _check_range(key: str, value: float, raw: Any, meta: Mapping[str, Any]) -> None:
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
    high_ok = (le is None or value <= le) and (lt is None or value < lt)
    if low_ok and high_ok:
        return
    low = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else None
    high = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else None
    if low and high:
        problem = f"must be in {low}, {high}"
    elif ge == 0:
        problem = "must not be negative"
    elif gt == 0:
        problem = "must be positive"
    elif low:
        problem = f"must be at least {ge:g}" if ge is not None else f"must be above {gt:g}"
    else:
        problem = f"must be at most {le:g}" if le is not None else f"must be below {lt:g}"
    raise FieldError(key, f"{problem}, not {raw!r}")
