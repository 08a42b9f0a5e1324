"""Environment substitution on the raw config text (``${VAR}``, ``${VAR:-default}``, ``${VAR:?msg}``,
``$$``; see :mod:`thoonk_bridge.config.loader`), ``.env`` files, and the offset maps that keep
positions pointing into the file as written."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from thoonk_bridge.config.errors import ConfigError, ConfigProblem, _os_reason

__all__ = ["load_env_file", "substitute_env"]

@dataclass
class _OffsetMap:
    """Maps character offsets in the substituted text back to the original text."""

    out_starts: list[int] = field(default_factory=lambda: [0])
    in_starts: list[int] = field(default_factory=lambda: [0])
    literal: list[bool] = field(default_factory=lambda: [True])

    def add(self, out_start: int, in_start: int, literal: bool) -> None:
        if self.out_starts[-1] == out_start:
            self.in_starts[-1], self.literal[-1] = in_start, literal
        else:
            self.out_starts.append(out_start)
            self.in_starts.append(in_start)
            self.literal.append(literal)

    def to_original(self, offset: int) -> int:
        i = bisect.bisect_right(self.out_starts, offset) - 1
        if self.literal[i]:
            return self.in_starts[i] + offset - self.out_starts[i]
        return self.in_starts[i]


class _Positions:
    """Offsets in the original text -> 1-based (line, col)."""

    def __init__(self, text: str, offsets: _OffsetMap | None = None) -> None:
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.offsets = offsets

    def of_offset(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line + 1, offset - self.line_starts[line] + 1

    def of_mark(self, mark: yaml.Mark) -> tuple[int, int]:
        offset = mark.index if self.offsets is None else self.offsets.to_original(mark.index)
        return self.of_offset(offset)


_SUBST = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.S)


def _placeholder(name: str) -> str:
    """What an unset ``${NAME}`` becomes so that the rest of the file is still checked: a plain word,
    valid in any YAML context (plain, quoted, flow), that no schema takes for a real value."""
    return f"unset-{name}"


@dataclass
class _Substituted:
    text: str
    offsets: _OffsetMap
    problems: list[ConfigProblem]
    unset_at: list[int]  # offsets in the original text of each ${...} that got a placeholder


def _substitute(text: str, env: Mapping[str, str], file: str) -> _Substituted:
    return _Substituter(text, env, file).run()


class _Substituter:
    """One pass over the YAML text: ``${...}`` and ``$$`` replaced, outside comments, escaped for
    the quoting they sit in, with a map from output offsets back to the original text."""

    def __init__(self, text: str, env: Mapping[str, str], file: str) -> None:
        self.text, self.env, self.file = text, env, file
        self.out: list[str] = []
        self.out_len = 0
        self.offsets = _OffsetMap()
        self.problems: list[ConfigProblem] = []
        self.unset_at: list[int] = []
        self.positions = _Positions(text)
        self.quote: str | None = None
        self.last_sig = "\n"  # last non-blank character on this line outside quotes
        self.run_start = 0  # start of the current literal run in ``text``

    def run(self) -> _Substituted:
        text, i, n = self.text, 0, len(self.text)
        in_comment = False
        while i < n:
            c = text[i]
            if c == "\n":
                in_comment = False
                self.last_sig = "\n"
                i += 1
            elif in_comment:
                i += 1
            elif c == "$" and i + 1 < n and text[i + 1] in "${":
                i = self._dollar(i)
            elif self.quote is None and c == "#" and (text[i - 1] if i else "\n") in " \t\n":
                in_comment = True
                i += 1
            else:
                i = self._scan(i)
        self._flush(n)
        return _Substituted("".join(self.out), self.offsets, self.problems, self.unset_at)

    def _flush(self, upto: int) -> None:
        self.out.append(self.text[self.run_start:upto])
        self.out_len += upto - self.run_start

    def _problem(self, at: int, message: str) -> None:
        line, col = self.positions.of_offset(at)
        self.problems.append(ConfigProblem(self.file, line, col, "", message))

    def _scan(self, i: int) -> int:
        """Track quoting at ``text[i]``; the offset of the next character to look at."""
        text, c = self.text, self.text[i]
        if self.quote == '"':
            if c == "\\":
                return i + 2
            if c == '"':
                self.quote = None
        elif self.quote == "'":
            if c == "'":
                if text[i + 1 : i + 2] == "'":
                    return i + 2
                self.quote = None
        else:
            prev = text[i - 1] if i else "\n"
            if c in "'\"" and self.last_sig in "\n:-[{,?" and prev in " \t\n[{,":
                self.quote = c
            if c not in " \t\r":
                self.last_sig = c
        return i + 1

    def _dollar(self, i: int) -> int:
        """``$$`` or ``${...}`` at ``i``: write what replaces it; the offset after it."""
        text = self.text
        self._flush(i)
        if text[i + 1] == "$":
            self.out.append("$")
            self.offsets.add(self.out_len, i, True)
            self.out_len += 1
            self.run_start = i + 2
            self.offsets.add(self.out_len, self.run_start, True)
            return i + 2
        end = text.find("}", i + 2)
        newline = text.find("\n", i + 2)
        if end < 0 or (0 <= newline < end):
            self._problem(i, "unterminated ${: write $$ for a literal $")
            self.run_start = i
            return i + 1
        value = self._value(text[i + 2 : end], i)
        if self.quote == '"':
            value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        elif self.quote == "'":
            value = value.replace("'", "''")
        self.offsets.add(self.out_len, i, False)
        self.out.append(value)
        self.out_len += len(value)
        self.run_start = end + 1
        self.offsets.add(self.out_len, self.run_start, True)
        self.last_sig = "x"
        return end + 1

    def _value(self, inner: str, at: int) -> str:
        """What ``${inner}`` at offset ``at`` stands for (a placeholder when unset: reported)."""
        m = _SUBST.fullmatch(inner)
        if not m:
            self._problem(
                at,
                f"invalid substitution ${{{inner}}}: expected ${{NAME}}, ${{NAME:-default}} "
                "or ${NAME:?message} (NAME: letters, digits, _)",
            )
            return ""
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        current = self.env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return (arg if unset else current) or ""
        if op is None and current is None:
            self._problem(at, f"environment variable {name} is not set")
        elif op is not None and unset:  # :? or ?
            self._problem(at, f"{name}: {arg}" if arg else f"environment variable {name} is not set")
        else:
            return current or ""
        self.unset_at.append(at)
        return _placeholder(name)


def substitute_env(text: str, env: Mapping[str, str], *, file: str) -> str:
    """Replace ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``,
    ``${VAR?message}`` and ``$$`` in ``text`` (see the module docstring).

    Raises :class:`ConfigError` naming ``file:line:col`` of every unset variable and every
    malformed ``${...}`` at once. Defaults are literal text (no nested ``${...}``, no ``}``).
    """
    result = _substitute(text, env, file)
    if result.problems:
        raise ConfigError(result.problems)
    return result.text


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def load_env_file(path: str | Path) -> dict[str, str]:
    """Read a ``.env`` file: ``KEY=VALUE`` lines.

    - blank lines and lines starting with ``#`` are skipped; an ``export`` prefix is allowed;
    - ``VALUE`` unquoted: taken as is, minus a trailing `` # comment``;
    - ``'VALUE'``: literal; ``"VALUE"``: with ``\\n \\t \\r \\" \\\\ \\$`` escapes; a comment may follow
      the closing quote;
    - values are not substituted (``${X}`` stays as written).

    Raises :class:`ConfigError` with ``file:line:col`` of every bad line at once.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, 0, 0, "", f"cannot read env file: {_os_reason(exc)}")]) from None
    result: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(raw) - len(raw.lstrip()) + 1
        m = _ENV_LINE.match(raw)
        if not m:
            problems.append(ConfigProblem(file, lineno, col, "", "expected KEY=VALUE (KEY: letters, digits, _)"))
            continue
        key, value = m.group(1), m.group(2)
        value_col = m.start(2) + 1
        if value[:1] in ("'", '"'):
            q = value[0]
            body, rest, ok = _env_quoted(value, q)
            if not ok:
                problems.append(ConfigProblem(file, lineno, value_col, key, f"unterminated {q}-quoted value"))
                continue
            if rest.strip() and not rest.lstrip().startswith("#"):
                problems.append(ConfigProblem(file, lineno, value_col, key, f"unexpected text after the closing {q}"))
                continue
            value = body
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        result[key] = value
    if problems:
        raise ConfigError(problems)
    return result


def _env_quoted(value: str, quote: str) -> tuple[str, str, bool]:
    out: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if quote == '"' and c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == quote:
            return "".join(out), value[i + 1 :], True
        out.append(c)
        i += 1
    return "", "", False
