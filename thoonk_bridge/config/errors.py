"""Config problems: :class:`ConfigProblem` (one located problem), :class:`ConfigError` (all of them),
and the limits that keep a message short and free of secrets whatever the file holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thoonk_bridge.redact import redact_text, shorten

__all__ = ["ConfigError", "ConfigProblem", "Loc"]

Loc = tuple[str | int, ...]

_MAX_MESSAGE = 1000  # characters of one problem's message (values in it: _MAX_VALUE each)
_MAX_PATH = 200
_MAX_VALUE = 120


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config (or env) file.

    ``line``/``col`` are 1-based; ``line == 0`` means the file as a whole (not found, unreadable).
    ``path`` is the dotted path of the offending node (``routes.0.to.1``), empty when there is none
    (YAML syntax errors, environment substitution).
    """

    file: str
    line: int
    col: int
    path: str
    message: str

    def __post_init__(self) -> None:
        # Every message may echo a value from the file (or the environment): never whole (a 50 MB
        # value), never with a URL's password, user info or query values.
        object.__setattr__(self, "path", shorten(redact_text(self.path), _MAX_PATH))
        object.__setattr__(self, "message", shorten(redact_text(self.message), _MAX_MESSAGE))

    def __str__(self) -> str:
        where = self.file if self.line <= 0 else f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)



def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_show(value)}"


def _show(value: Any) -> str:
    """``repr(value)`` for a message: at most :data:`_MAX_VALUE` characters."""
    return shorten(repr(value), _MAX_VALUE)



def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    return str(exc)
