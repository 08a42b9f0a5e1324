"""Plugin discovery: the installed plugins (entry-point group ``thoonk_bridge.plugins``) and the
order they start in."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from thoonk_bridge.plugin import Plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginLoadError", "always_enabled_plugins", "discover_plugins", "start_order"]

ENTRY_POINT_GROUP = "thoonk_bridge.plugins"


class PluginLoadError(Exception):
    """An installed plugin's entry point could not be loaded or is not a Plugin subclass."""


def discover_plugins(broken: dict[str, str] | None = None) -> dict[str, type[Plugin[Any]]]:
    """Every plugin installed in the ``thoonk_bridge.plugins`` entry-point group, by name.

    An entry point that cannot be loaded (import error, not a Plugin subclass, wrong name):
    with ``broken`` given, it is left out and ``broken[name]`` says why (``"module:attr: reason"``),
    so one broken third-party plugin does not stop the others (the config reports it where a route
    uses it, the commands warn); without, :class:`PluginLoadError` names every such entry point.
    """
    from thoonk_bridge.plugin import Plugin  # here: plugin.py re-exports this module's names

    found: dict[str, type[Plugin[Any]]] = {}
    problems: dict[str, tuple[str, str]] = {}  # name -> (entry point value, reason)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must name itself
            problems[ep.name] = (ep.value, f"{type(exc).__name__}: {exc}")
            continue
        if not (isinstance(obj, type) and issubclass(obj, Plugin)):
            problems[ep.name] = (ep.value, "not a thoonk_bridge.plugin.Plugin subclass")
            continue
        if getattr(obj, "name", None) != ep.name:
            problems[ep.name] = (ep.value, f"plugin class name is {getattr(obj, 'name', None)!r}")
            continue
        found[ep.name] = obj
    if broken is not None:
        broken.update({name: f"{value}: {reason}" for name, (value, reason) in problems.items()})
    elif problems:
        raise PluginLoadError(
            "cannot load plugins: " + "; ".join(f"{n} ({v}): {r}" for n, (v, r) in problems.items())
        )
    return found


def always_enabled_plugins() -> dict[str, type[Plugin[Any]]]:
    """The installed plugins every daemon runs whether the config names them or not
    (``Plugin.always_enabled``: the bridge's own ``thoonk``); their endpoint kinds are always known.
    One that cannot be loaded is left out (``thoonk-bridge plugins`` says why)."""
    return {name: cls for name, cls in discover_plugins({}).items() if cls.always_enabled}


def start_order(plugins: dict[str, type[Plugin[Any]]]) -> list[str]:
    """Plugin names in dependency order (dependencies first); raises ValueError on a cycle."""
    order: list[str] = []
    state: dict[str, Literal["visiting", "done"]] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("plugin dependency cycle: " + " -> ".join((*chain, name)))
        state[name] = "visiting"
        for dep in plugins[name].depends_on:
            if dep in plugins:
                visit(dep, (*chain, name))
        state[name] = "done"
        order.append(name)

    for name in sorted(plugins):
        visit(name, ())
    return order
