"""Topology checks across routes: duplicate names, two sinks writing one resource, a route writing
into its own source, loops of three or more routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thoonk_bridge.config.errors import Loc
from thoonk_bridge.config.schema import RouteSpec
from thoonk_bridge.config.yaml_positions import _Doc
from thoonk_bridge.plugin import Endpoint, EndpointKind


def _route_endpoints(index: int, raw: dict[str, Any], route: RouteSpec) -> list[tuple[Loc, Endpoint[Any]]]:
    """Each endpoint of a parsed route with the path of its YAML node (source first)."""
    here: Loc = ("routes", index)
    out: list[tuple[Loc, Endpoint[Any]]] = [((*here, "from"), route.source)]
    if isinstance(raw.get("to"), list):
        out.extend(((*here, "to", j), ep) for j, ep in enumerate(route.sinks))
    else:
        out.extend(((*here, "to"), ep) for ep in route.sinks)
    return out


def _resource(kinds: Mapping[str, EndpointKind[Any, Any]], endpoint: Endpoint[Any]) -> str:
    kind = kinds.get(endpoint.kind)
    try:
        return str(kind.resource(endpoint)) if kind is not None else str(endpoint)
    except Exception:  # noqa: BLE001 - a plugin's resource() may not handle source endpoints
        return str(endpoint)


def _check_topology(
    doc: _Doc, routes_data: list[Any], routes: list[RouteSpec | None], kinds: Mapping[str, EndpointKind[Any, Any]]
) -> None:
    # duplicate names (checked even for routes with other problems)
    first_name: dict[str, int] = {}
    for i, raw in enumerate(routes_data):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in first_name:
            doc.at(
                ("routes", i, "name"),
                f"duplicate route name {name!r} (first used on line {doc.line_of(('routes', first_name[name]))})",
            )
        else:
            first_name[name] = i

    writers: dict[str, tuple[str, int]] = {}  # resource -> (route name, line)
    edges: list[tuple[str, str, int, Loc]] = []  # (from node, to node, route index, sink path)
    for i, route in enumerate(routes):
        if route is None:
            continue
        endpoints = _route_endpoints(i, routes_data[i], route)
        source_key = _resource(kinds, route.source)
        for loc, sink in endpoints[1:]:
            if (sink.kind, sink.address) == (route.source.kind, route.source.address):
                doc.at(loc, f"route {route.name!r} writes into its own source {sink}")
                continue
            res = _resource(kinds, sink)
            if res in writers:
                other, line = writers[res]
                who = "this route" if other == route.name else f"route {other!r}"
                doc.at(
                    loc,
                    f"{res} is already written by {who} (line {line}); two sinks writing the same "
                    "resource would overwrite each other",
                )
                continue
            writers[res] = (route.name, doc.line_of(loc))
            edges.append((source_key, res, i, loc))

    # loops of three or more routes (a pair of opposite routes is fine: the router drops echoes)
    succ: dict[str, set[str]] = {}
    for a, b, _i, _loc in edges:
        succ.setdefault(a, set()).add(b)
    reported: set[frozenset[str]] = set()
    route_names = {i: r.name for i, r in enumerate(routes) if r is not None}
    first_route = {(a, b): i for a, b, i, _loc in reversed(edges)}
    for a, b, _i, loc in reversed(edges):  # report at the route that closes the loop
        cycle = _long_cycle(succ, a, b)
        if cycle is None or frozenset(cycle) in reported:
            continue
        reported.add(frozenset(cycle))
        # list the ring from the route written first
        pairs = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        start = min(range(len(pairs)), key=lambda k: first_route.get(pairs[k], 1 << 30))
        cycle = cycle[start:] + cycle[:start]
        names: list[str] = []
        for x, y in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            names.extend(route_names[j] for p, q, j, _ in edges if (p, q) == (x, y))
        ring = " -> ".join([*cycle, cycle[0]])
        doc.at(
            loc,
            f"routes {', '.join(repr(n) for n in dict.fromkeys(names))} form a loop ({ring}) that would "
            "ping-pong forever; only a pair of opposite routes (A -> B and B -> A) is allowed, "
            "because the router drops the echo of its own writes",
        )


def _long_cycle(succ: dict[str, set[str]], a: str, b: str) -> list[str] | None:
    """A simple cycle a -> b -> ... -> a of length >= 3 through the edge a -> b, or None."""
    for w in sorted(succ.get(b, ())):
        if w in (a, b):
            continue
        # shortest path w -> a avoiding b
        parents: dict[str, str | None] = {w: None}
        frontier = [w]
        while frontier and a not in parents:
            nxt = []
            for x in frontier:
                for y in sorted(succ.get(x, ())):
                    if y == b or y in parents:
                        continue
                    parents[y] = x
                    nxt.append(y)
            frontier = nxt
        if a in parents:
            path = [a]
            cur: str | None = parents[a]
            while cur is not None:
                path.append(cur)
                cur = parents[cur]
            path.reverse()  # w ... a
            return [a, b, *path[:-1]]
    return None
