"""Named implementations of one extension point (compression methods, models), registered where they are defined.

A registry is the single list of a kind of method: config validation, the
report's labels and the parametrised tests all read it, so adding a method is
adding its module (with its `@REGISTRY.register("name")` line) and nothing else.
A method with settings of its own declares them beside its code, as a config
section (an `Options` dataclass on its class); `sections` lists them, and the
config reads its keys from there (`common.config.method_sections`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> implementation, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@UPLINK.register("topk")` on the implementing class."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def section_of(self, name: str) -> str:
        """The name of entry `name`'s own config section: `defence.fill` (the
        key that picks the method, then the method)."""
        return f"{self.kind}.{name}"

    def sections(self) -> dict[str, type]:
        """The config sections its entries declare (their `Options`), by `section_of` name."""
        sections = {self.section_of(name): getattr(entry, "Options", None) for name, entry in self._entries.items()}
        return {name: options for name, options in sections.items() if options is not None}
