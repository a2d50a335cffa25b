"""One small registry class, instantiated once per kind (formats, methods, kernels, ...)."""

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lmpress.errors import LmpressError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object table filled by the ``register`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise LmpressError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def names_in_order(self) -> list[str]:
        """Names in the order they were registered (where that order means something)."""
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


Limits = dict[str, tuple[Callable[[Any], bool], str]]


def keyword_defaults(fn: Callable[..., Any], positional: tuple[str, ...]) -> dict[str, Any]:
    """The options of a registered function: its parameters after ``positional`` and
    their defaults, so that a method's or transform's defaults are stated once, in its
    signature. Every option must have a default."""
    params = list(inspect.signature(fn).parameters.values())
    if tuple(p.name for p in params[: len(positional)]) != positional:
        raise TypeError(f"{fn.__name__} must start with ({', '.join(positional)})")
    defaults = {}
    for p in params[len(positional) :]:
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"option {p.name!r} of {fn.__name__} needs a default")
        defaults[p.name] = p.default
    return defaults


def validate_options(
    given: dict[str, Any] | None, defaults: dict[str, Any], limits: Limits, what: str
) -> dict[str, Any]:
    """``defaults`` updated by ``given`` after checking names, types and ranges.

    ``limits`` maps an option to (predicate, description of valid values);
    ``what`` names the owner in errors, e.g. ``"method 'gptq'"``.
    """
    given = given or {}
    unknown = set(given) - set(defaults)
    if unknown:
        raise LmpressError(
            f"unknown option(s) {sorted(unknown)} for {what}; allowed: {sorted(defaults) or 'none'}"
        )
    for key, value in given.items():
        want = type(defaults[key])
        ok_type = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            raise LmpressError(f"option {key}={value!r} of {what} must be a {want.__name__}")
        if key in limits and not limits[key][0](value):
            raise LmpressError(
                f"option {key}={value!r} of {what} is out of range: {limits[key][1]}"
            )
    return {**defaults, **given}
