"""Discovery (WebSub §4): the hubs and the ``self`` URL a topic advertises, from its ``Link``
headers first, then its body (Atom ``<link>``, RSS ``<atom:link>``, or an HTML ``<head>``)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

from defusedxml import ElementTree as DET

ATOM_NS = "http://www.w3.org/2005/Atom"


def parse_link_header(values: list[str]) -> list[tuple[str, set[str]]]:
    """RFC 8288 ``Link`` header values -> [(target, {rel, ...})]."""
    out: list[tuple[str, set[str]]] = []
    for value in values:
        i, n = 0, len(value)
        while i < n:
            start = value.find("<", i)
            if start < 0:
                break
            end = value.find(">", start)
            if end < 0:
                break
            target = value[start + 1:end].strip()
            i = end + 1
            rels: set[str] = set()
            # parameters until the next top-level comma
            while i < n and value[i] != ",":
                if value[i] == ";":
                    i += 1
                    eq = value.find("=", i)
                    semi = min([x for x in (value.find(";", i), value.find(",", i)) if x >= 0] or [n])
                    if eq < 0 or eq > semi:
                        i = semi
                        continue
                    name = value[i:eq].strip().lower()
                    j = eq + 1
                    while j < n and value[j] == " ":
                        j += 1
                    if j < n and value[j] == '"':
                        close = value.find('"', j + 1)
                        close = n if close < 0 else close
                        pval = value[j + 1:close]
                        i = close + 1
                    else:
                        k = j
                        while k < n and value[k] not in ";,":
                            k += 1
                        pval = value[j:k].strip()
                        i = k
                    if name == "rel":
                        rels.update(r.lower() for r in pval.split())
                else:
                    i += 1
            out.append((target, rels))
            i += 1
    return out


class _HeadLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, set[str]]] = []
        self.in_head = False
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:
            return
        if tag == "head":
            self.in_head = True
        elif tag == "body":
            self.done = True
        elif tag == "link" and self.in_head:
            a = {k.lower(): (v or "") for k, v in attrs}
            if a.get("href"):
                self.links.append((a["href"], {r.lower() for r in a.get("rel", "").split()}))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
            self.done = True


def _xml_links(body: bytes) -> list[tuple[str, set[str]]]:
    try:
        root = DET.fromstring(body, forbid_dtd=False)
    except Exception:  # noqa: BLE001 - not XML, hostile XML: no links
        return []
    scope = root
    if root.tag == "rss":
        channel = root.find("channel")
        scope = channel if channel is not None else root
    out = []
    for el in scope:
        if el.tag == f"{{{ATOM_NS}}}link" and el.get("href"):
            out.append((el.get("href", ""), {r.lower() for r in (el.get("rel") or "").split()}))
    return out


def discover_links(headers: Any, body: bytes, base: str) -> tuple[list[str], str | None, str]:
    """(hubs, self, where): ``Link`` headers first; the body only when the headers name no hub."""

    def pick(links: list[tuple[str, set[str]]]) -> tuple[list[str], str | None]:
        hubs = [urljoin(base, t) for t, rels in links if "hub" in rels]
        selfs = [urljoin(base, t) for t, rels in links if "self" in rels]
        return list(dict.fromkeys(hubs)), (selfs[0] if selfs else None)

    hubs, self_url = pick(parse_link_header(headers.getall("Link", [])))
    if hubs:
        return hubs, self_url, "header"
    ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
    head = body.lstrip()[:512].lower()
    if "html" in ctype and "xml" not in ctype or head.startswith((b"<!doctype html", b"<html")):
        parser = _HeadLinks()
        try:
            parser.feed(body[:1024 * 1024].decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001, S110 - broken HTML: whatever was found
            pass
        hubs, self_url = pick(parser.links)
        return hubs, self_url, "html"
    hubs, self_url = pick(_xml_links(body))
    return hubs, self_url, "xml"


__all__ = ["discover_links", "parse_link_header"]
