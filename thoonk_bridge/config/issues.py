"""Problems relative to a node (:class:`_Issue`) and how pydantic's validation errors become them:
unknown keys with a "did you mean", missing keys pointed at the mapping that lacks them."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from thoonk_bridge.config.errors import Loc, _show


@dataclass(frozen=True)
class _Issue:
    """A problem relative to some node: ``where`` says what ``loc`` designates.

    - ``value``: the node at ``loc`` (trailing elements absent from the data are schema tags).
    - ``key``: the key node of the last element of ``loc`` (unknown or duplicate key).
    - ``missing``: ``loc[-1]`` is absent; point at the mapping that lacks it.
    """

    loc: Loc
    message: str
    where: Literal["value", "key", "missing"] = "value"


def _model_at(model: type[BaseModel] | None, loc: Loc) -> type[BaseModel] | None:
    """Best effort: the pydantic model validating the mapping at ``loc`` inside ``model``."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    if origin is dict:
        args = typing.get_args(annotation)
        return _inner_model(args[1]) if len(args) == 2 else None
    return None


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _unknown_key_message(key: str, allowed: list[str] | tuple[str, ...]) -> str:
    allowed = list(allowed)
    if not allowed:
        return f"unknown key {_show(key)}: no keys are allowed here"
    close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
    if close:
        return f"unknown key {_show(key)} (did you mean {' or '.join(repr(c) for c in close)}?)"
    return f"unknown key {_show(key)} (allowed: {', '.join(allowed)})"


def _issues_from_validation(
    exc: ValidationError, model: type[BaseModel] | None, extra_allowed: tuple[str, ...] = ()
) -> list[_Issue]:
    issues: list[_Issue] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden" and loc:
            allowed = _allowed_keys(_model_at(model, loc[:-1]))
            if len(loc) == 1:
                allowed = [*allowed, *extra_allowed]
            issues.append(_Issue(loc, _unknown_key_message(str(loc[-1]), allowed), "key"))
        elif kind == "missing" and loc:
            issues.append(_Issue(loc, "required key is missing", "missing"))
        else:
            msg = str(err["msg"])
            for prefix in ("Value error, ", "Assertion failed, "):
                if msg.startswith(prefix):
                    msg = msg[len(prefix) :]
            value = err.get("input")
            if kind in ("string_type", "string_pattern_mismatch") and isinstance(value, bool | int | float):
                msg += " (YAML read this unquoted value as a " + type(value).__name__ + "; quote it)"
            issues.append(_Issue(loc, msg, "value"))
    return issues
