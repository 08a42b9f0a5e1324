"""HTML: sanitising untrusted markup for feeds, plain text of HTML, and the nesting limit that keeps
both linear in the size of the markup."""

from __future__ import annotations

import html
import re

import nh3

from .model import MAX_HTML_DEPTH, no_surrogates

_BREAK_TAGS = re.compile(r"<br\s*/?>", re.IGNORECASE)
_BLOCK_END_TAGS = re.compile(
    r"</(?:p|div|li|h[1-6]|blockquote|pre|tr|ul|ol|table|dl|dd|dt|section|article|figure)\s*>",
    re.IGNORECASE,
)


def html_to_text(markup: str, *, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Plain text of an HTML (or XHTML) fragment: tags dropped, entities decoded.

    ``<br>`` becomes a line break and the end of a block element (``p``, ``div``, ``li``, headings…) a
    blank line; ``script``/``style`` elements are dropped with their content. Nesting deeper than
    ``max_depth`` is flattened first (see :func:`limit_html_depth`). Lone surrogates are dropped
    (the HTML parser cannot take them; a JSON payload can hold them as escapes).
    """
    text = _BREAK_TAGS.sub("\n", limit_html_depth(no_surrogates(markup), max_depth))
    text = _BLOCK_END_TAGS.sub("\n\n", text)
    text = html.unescape(nh3.clean(text, tags=set()))
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def as_text(value: str | None, kind: str) -> str | None:
    """Plain text of a text construct of type ``kind``."""
    if value is None or kind == "text":
        return value
    return html_to_text(value)


_SAFE_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "details",
        "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small",
        "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
        "time", "tr", "u", "ul",
    }
)  # fmt: skip
_SAFE_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"lang", "dir", "title"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "time": {"datetime"},
    "ol": {"start"},
    "blockquote": {"cite"},
    "q": {"cite"},
}
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

# A start or end tag as HTML tokenizes it, for counting nesting: ``<name ...>`` or ``</name ...>``.
# An attribute value is quoted only when a quote comes first after ``=`` (a quote elsewhere is an
# ordinary character, as in HTML); possessive matching keeps the scan linear on any input.
_TAG = re.compile(r"""<(/?)([A-Za-z][^\s/>]*)(?:[^>"'=]++|=\s*+"[^"]*+"|=\s*+'[^']*+'|[="'])*+>""")
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
# Elements whose end tag HTML implies: a parser closes them when a parent closes, and ``p``/``li``/
# ``dd``/``dt``/``option`` close an open sibling of their kind (table elements are left out: scope
# rules make the parser ignore some of their end tags, and counting too deep is the safe side).
_IMPLIED_END = frozenset({"dd", "dt", "li", "optgroup", "option", "p", "rb", "rp", "rt", "rtc"})
_SIBLING_CLOSES = {"p": {"p"}, "li": {"li"}, "dd": {"dd", "dt"}, "dt": {"dd", "dt"}, "option": {"option"}}


def limit_html_depth(markup: str, max_depth: int = MAX_HTML_DEPTH) -> str:
    """``markup`` with the start and end tags nested deeper than ``max_depth`` removed (text kept).

    One linear scan, done before an HTML parser sees untrusted markup: html5ever (nh3) takes time
    that grows with the square of the nesting depth. The scan follows the open elements on a
    stack the way an HTML parser would, closer to over-counting than under-counting: an end tag
    closes elements only when it matches the innermost one (or only elements with implied end tags
    lie above its match); other end tags change nothing. Markup within the limit is returned
    unchanged (the same object).
    """
    if markup.count("<") <= max_depth:
        return markup  # too few tags to nest that deep: the common case costs one count
    stack: list[str] = []
    drop: list[tuple[int, int]] = []
    for match in _TAG.finditer(markup):
        name = match.group(2).lower()
        if match.group(1):  # end tag
            closes = 0
            for above in range(len(stack) - 1, -1, -1):
                if stack[above] == name:
                    closes = len(stack) - above
                    break
                if stack[above] not in _IMPLIED_END:
                    break
            if len(stack) > max_depth or closes == 0 and len(stack) >= max_depth:
                drop.append(match.span())  # its start tag was dropped too, or it closes nothing
            if closes:
                del stack[len(stack) - closes :]
            continue
        if name in _VOID_TAGS:
            continue
        if stack and stack[-1] in _SIBLING_CLOSES.get(name, ()):
            stack.pop()
        stack.append(name)
        if len(stack) > max_depth:
            drop.append(match.span())
    if not drop:
        return markup
    parts: list[str] = []
    position = 0
    for start, end in drop:
        parts.append(markup[position:start])
        position = end
    parts.append(markup[position:])
    return "".join(parts)


def sanitize_html(markup: str, *, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Sanitise untrusted HTML with nh3 for publishing in a feed.

    Conservative allow-list: text formatting, headings, lists, tables, links and images only; no
    ``script``/``style``/``iframe``/``object``/forms (``script`` and ``style`` lose their content
    too), no ``on*``, ``style`` or ``class`` attributes, URLs only ``http``, ``https``, ``mailto`` or
    relative; links get ``rel="noopener noreferrer"``; comments dropped. Tags nested deeper than
    ``max_depth`` are dropped first, their text kept (:func:`limit_html_depth`), so that the time
    taken stays linear in the size of the markup.
    """
    return nh3.clean(
        limit_html_depth(no_surrogates(markup), max_depth),
        tags=set(_SAFE_TAGS),
        clean_content_tags={"script", "style"},
        attributes=_SAFE_ATTRIBUTES,
        url_schemes=set(_SAFE_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
