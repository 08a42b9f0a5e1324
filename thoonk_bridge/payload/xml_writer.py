"""Serializing an ElementTree element as XML text, namespaces as default-namespace declarations."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .model import PayloadError, xml_safe

_XML_NS = "http://www.w3.org/XML/1998/namespace"


def escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(text: str) -> str:
    return escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def write_xml(elem: ET.Element, scope: str, out: list[str]) -> None:
    """Append ``elem`` (not its tail) to ``out``; ``scope`` is the default namespace in effect.

    Element namespaces are written as default-namespace declarations where they change (so an Atom
    entry reads ``<entry xmlns="...Atom">`` and its XHTML ``<div xmlns="...xhtml">``); namespaced
    attributes get ``nsN`` prefixes declared on their element (``xml:`` needs none). Comments are
    kept, processing instructions dropped. ElementTree's own ``default_namespace`` cannot be used:
    it refuses unqualified attributes such as Atom's ``type`` and ``href``.
    """
    tag: object = elem.tag
    if tag is ET.Comment:
        comment = (elem.text or "").replace("--", "- -")
        out.append(f"<!--{comment} -->" if comment.endswith("-") else f"<!--{comment}-->")
        return
    if not isinstance(tag, str):  # processing instruction or something stranger
        return
    namespace, local = _split_tag(tag)
    declarations: list[str] = []
    if namespace != scope:
        declarations.append(f' xmlns="{_escape_attr(namespace)}"')
        scope = namespace
    attributes: list[str] = []
    prefixes: dict[str, str] = {}
    for key, value in elem.items():
        key_namespace, key_local = _split_tag(str(key))
        if not key_namespace:
            name = key_local
        elif key_namespace == _XML_NS:
            name = f"xml:{key_local}"
        else:
            if key_namespace not in prefixes:
                prefixes[key_namespace] = f"ns{len(prefixes)}"
                declarations.append(f' xmlns:{prefixes[key_namespace]}="{_escape_attr(key_namespace)}"')
            name = f"{prefixes[key_namespace]}:{key_local}"
        attributes.append(f' {name}="{_escape_attr(str(value))}"')
    out.append(f"<{local}{''.join(declarations)}{''.join(attributes)}")
    if not elem.text and len(elem) == 0:
        out.append(" />")
        return
    out.append(">")
    out.append(escape_text(elem.text or ""))
    for child in elem:
        write_xml(child, scope, out)
        out.append(escape_text(child.tail or ""))
    out.append(f"</{local}>")


def tostring(elem: ET.Element) -> str:
    """Serialize ``elem`` alone (not its tail), its namespace as default, no XML declaration.

    Characters XML forbids are stripped; carriage returns are written as ``&#13;`` so that they
    survive XML's line-end normalisation.
    """
    out: list[str] = []
    try:
        write_xml(elem, "", out)
    except RecursionError:
        raise PayloadError("xml: elements nested too deeply to serialize") from None
    return xml_safe("".join(out))
