"""A small name → factory registry (in the manner of timm's ``register_model``).

Models, datasets, triggers, teacher recipes, DFKD methods and defenses are each looked up by name in
a :class:`Registry`, never through if/elif chains.

Example::

    MODELS = Registry("model")

    @MODELS.register("lenet5")
    def lenet5(**kw): ...

    MODELS.create("lenet5", num_classes=10)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dfkd_viz.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factory functions).

    Args:
        kind: what the registry holds, used in error messages (``"method"``, ``"trigger"``...).
        discover: optional callable returning extra ``{name: object}`` entries found at lookup
            time (e.g. datasets a user imported into ``DFKD_VIZ_HOME``); registered names win.
    """

    def __init__(self, kind: str, discover: Callable[[], dict[str, T]] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._discover = discover

    def _all(self) -> dict[str, T]:
        if self._discover is None:
            return self._items
        return {**self._discover(), **self._items}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; raises ValueError on a duplicate name."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            UnknownNameError: one sentence listing the known names (and the closest match).
        """
        items = self._items if name in self._items else self._all()
        try:
            return items[name]
        except KeyError:
            known = ", ".join(sorted(items)) or "none"
            close = difflib.get_close_matches(str(name), list(items), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}; known: {known}") from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Registered names, in registration order (then discovered ones)."""
        return list(self._items) + [n for n in self._all() if n not in self._items]

    def is_registered(self, name: object) -> bool:
        """True for a name registered in code (not one found by ``discover``)."""
        return name in self._items

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self):
        return self._all().items()
