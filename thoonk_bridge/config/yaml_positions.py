"""YAML with positions: the document as plain data plus the line and column of every node, so that
each problem points at the node it is about (:class:`_Doc`)."""

from __future__ import annotations

import bisect
from typing import Any

import yaml

from thoonk_bridge.config.env import _Positions
from thoonk_bridge.config.errors import ConfigError, ConfigProblem, Loc
from thoonk_bridge.config.issues import _Issue

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_NODES = 200_000


class _Doc:
    """The YAML document as plain Python data plus the start mark of every node, by path."""

    def __init__(self, file: str, positions: _Positions, unset_at: list[int] | None = None) -> None:
        self.file = file
        self.positions = positions
        self.unset_at = sorted(unset_at or ())
        self.placeholder_nodes: set[tuple[int, int]] = set()  # (line, col) of scalars holding one
        self.values: dict[Loc, tuple[int, int]] = {}
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.raw: dict[Loc, yaml.ScalarNode] = {}
        self.problems: list[ConfigProblem] = []
        self._constructor = yaml.SafeLoader("")
        self._count = 0
        self._stack: set[int] = set()

    # -- building

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooBig(node)
        self.values[path] = self.positions.of_mark(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            self.raw[path] = node
            self._note_placeholder(node)
            try:
                return self._constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError):
                return str(node.value)  # looked like a timestamp but is not one: keep the text
        if id(node) in self._stack:
            self.problem_at_node(node, path, "recursive alias: a node cannot contain itself")
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._build_mapping(node, path)
        finally:
            self._stack.discard(id(node))

    def _build_mapping(self, node: yaml.MappingNode, path: Loc) -> dict[str, Any]:
        seen: dict[str, yaml.Node] = {}
        skip: set[int] = set()
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem_at_node(key_node, path, "mapping keys must be plain scalars")
                skip.add(id(key_node))
                continue
            key = str(key_node.value)
            if key in seen:
                first = self.positions.of_mark(seen[key].start_mark)
                line, col = self.positions.of_mark(key_node.start_mark)
                self.problems.append(
                    ConfigProblem(
                        self.file,
                        line,
                        col,
                        _dotted((*path, key)),
                        f"duplicate key (first at line {first[0]})",
                    )
                )
                skip.add(id(key_node))
                continue
            seen[key] = key_node
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            line, col = self.positions.of_mark(mark)
            self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), str(exc.problem)))
            node.value = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if id(key_node) in skip or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            child = (*path, key)
            self.keys[child] = self.positions.of_mark(key_node.start_mark)
            self._note_placeholder(key_node)
            result[key] = self.build(value_node, child)
        return result

    def _note_placeholder(self, node: yaml.Node) -> None:
        if not self.unset_at:
            return
        to_original = self.positions.offsets.to_original if self.positions.offsets else (lambda o: o)
        start, end = to_original(node.start_mark.index), to_original(node.end_mark.index)
        first = bisect.bisect_left(self.unset_at, start)
        if first < len(self.unset_at) and (self.unset_at[first] < end or self.unset_at[first] == start):
            self.placeholder_nodes.add(self.positions.of_mark(node.start_mark))

    # -- reporting

    def problem_at_node(self, node: yaml.Node, path: Loc, message: str) -> None:
        line, col = self.positions.of_mark(node.start_mark)
        self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), message))

    def add(self, prefix: Loc, issue: _Issue) -> None:
        """Record ``issue`` (relative to the node at ``prefix``) at the best YAML node."""
        loc = (*prefix, *issue.loc)
        if issue.where == "key" and loc in self.keys:
            line, col = self.keys[loc]
            self.problems.append(ConfigProblem(self.file, line, col, _dotted(loc), issue.message))
            return
        matched: Loc = ()
        for i in range(len(loc)):
            if loc[: i + 1] in self.values:
                matched = loc[: i + 1]
            else:
                break
        path = matched
        if issue.where == "missing" and len(loc) > len(matched):
            path = loc[: len(matched) + 1]
        line, col = self.values.get(matched, (1, 1))
        self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), issue.message))

    def add_all(self, prefix: Loc, issues: list[_Issue]) -> None:
        for issue in issues:
            self.add(prefix, issue)

    def at(self, path: Loc, message: str) -> None:
        self.add((), _Issue(path, message))

    def line_of(self, path: Loc) -> int:
        return self.values.get(path, (0, 0))[0]


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _dotted(path: Loc) -> str:
    return ".".join(str(p) for p in path)


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree, by libyaml when PyYAML has it (a 1,000-route file: 10x faster); a file it
    refuses is parsed again by the pure-Python loader, whose messages the errors are written from."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=fast)
            return node
        except (yaml.YAMLError, RecursionError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _parse_yaml(
    text: str, file: str, positions: _Positions, unset_at: list[int] | None = None
) -> tuple[Any, _Doc]:
    doc = _Doc(file, positions, unset_at)
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = str(exc.problem or exc.context)
        context = str(exc.context) if exc.context and exc.problem else ""
        if context and problem.startswith("but "):  # "expected a single document..., but found another"
            problem, context = f"{context}, {problem}", ""
        message = f"invalid YAML: {problem}"
        if context and exc.context_mark is not None:
            cline, _ccol = positions.of_mark(exc.context_mark)
            message += f" ({context} on line {cline})"
        if "'\\t'" in problem:
            message += "; indent with spaces, not tabs"
        line, col = positions.of_mark(mark) if mark is not None else (1, 1)
        raise ConfigError([ConfigProblem(file, line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(file, 1, 1, "", "invalid YAML: nested too deeply")]) from None
    if node is None:
        return None, doc
    try:
        data = doc.build(node, ())
    except _TooBig as exc:
        line, col = positions.of_mark(exc.node.start_mark)
        raise ConfigError(
            [ConfigProblem(file, line, col, "", f"the document expands to more than {_MAX_NODES} nodes")]
        ) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(file, 1, 1, "", "invalid YAML: nested too deeply")]) from None
    return data, doc
