"""Reading untrusted payload text: bytes to str, the size limit, format detection, and defused XML
parsing (DTDs, entities, external references and deep nesting refused)."""

from __future__ import annotations

import codecs
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from .model import ATOM_NS, MAX_XML_DEPTH, Format, PayloadError

_XML_DECL_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


def decode(data: bytes) -> str:
    """Bytes to str: BOM, else the encoding of a leading XML declaration, else strict UTF-8."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            encoding = name
            break
    else:
        encoding = "utf-8"
        match = _XML_DECL_ENCODING.match(data)
        if match is not None:
            declared = match.group(1).decode("ascii")
            try:
                info = codecs.lookup(declared)
            except LookupError:
                raise PayloadError(f"atom: unknown encoding {declared!r} in the XML declaration") from None
            # A declaration readable as ASCII cannot be UTF-16/32 without a BOM; trust the bytes.
            if not info.name.startswith(("utf-16", "utf-32")):
                encoding = info.name
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        label = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
        raise PayloadError(f"payload is not valid {label}: byte 0x{bad} at offset {exc.start}") from None


def check_size(payload: str | bytes, max_bytes: int | None) -> None:
    if max_bytes is None:
        return
    if isinstance(payload, bytes):
        size = len(payload)
    elif len(payload) > max_bytes:  # every character is at least one byte
        size = len(payload)
    elif len(payload) * 4 <= max_bytes:  # and at most four
        return
    else:
        size = len(payload.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PayloadError(f"payload is too large: over {max_bytes} bytes (at least {size})")


class _RootFound(Exception):
    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


class _RootSniffer:
    """Parser target that stops at the first start tag."""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _RootFound(tag)

    def close(self) -> None:
        return None


_SNIFF_CHUNK = 65536


def _sniff_root(text: str) -> str | None:
    """Tag of the root element (Clark notation), ``""`` when the XML is refused as hostile,
    ``None`` when there is no well-formed start of a root element."""
    parser = DefusedXMLParser(target=_RootSniffer(), forbid_dtd=False)
    try:
        for start in range(0, len(text), _SNIFF_CHUNK):
            parser.feed(text[start : start + _SNIFF_CHUNK])
        parser.close()
    except _RootFound as found:
        return found.tag
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        return ""
    except (ET.ParseError, UnicodeError, ValueError):
        return None
    return None


def detect_format(payload: str) -> Format:
    """Guess the format of a payload.

    * Starts with ``<`` (after whitespace or a BOM): :attr:`Format.ATOM` when the root element is
      ``{ATOM_NS}entry`` (even if the XML breaks later on, so that :func:`parse` reports the
      breakage), and also when the XML declares entities or external references before its root
      (refused as hostile by :func:`parse` rather than passed on as text); otherwise
      :attr:`Format.TEXT` (HTML, other XML, ``<3 you``...).
    * Starts with ``{``: :attr:`Format.JSON` when the whole payload parses as a JSON object,
      otherwise :attr:`Format.TEXT`. (Broken JSON is text: pass ``fmt`` to :func:`parse` when the
      format is known, to get the JSON error instead.)
    * Anything else: :attr:`Format.TEXT`.
    """
    return detect_json(payload)[0]


def detect_json(payload: str) -> tuple[Format, Any]:
    """:func:`detect_format`, and the decoded object when the payload is JSON (else ``None``), so
    that parsing a JSON payload decodes it once."""
    text = payload.lstrip().removeprefix("\ufeff").lstrip()
    if text.startswith("<"):
        tag = _sniff_root(text)
        return (Format.ATOM if tag in (f"{{{ATOM_NS}}}entry", "") else Format.TEXT), None
    if text.startswith("{"):
        try:
            value = json.loads(text, strict=False)
        except (ValueError, RecursionError):
            return Format.TEXT, None
        return (Format.JSON, value) if isinstance(value, dict) else (Format.TEXT, None)
    return Format.TEXT, None


# --------------------------------------------------------------------------------------------------


class _DepthLimitedBuilder(ET.TreeBuilder):
    """TreeBuilder that refuses elements nested deeper than :data:`MAX_XML_DEPTH`."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        self._depth += 1
        if self._depth > MAX_XML_DEPTH:
            raise PayloadError(f"atom: elements nested deeper than {MAX_XML_DEPTH} levels")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def parse_xml(text: str, what: str) -> ET.Element:
    """Parse untrusted XML text with defusedxml; every failure is a PayloadError."""
    parser = DefusedXMLParser(
        target=_DepthLimitedBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(text.lstrip())
        root: ET.Element = parser.close()
    except DTDForbidden as exc:
        raise PayloadError(f"{what}: DTDs are not allowed (<!DOCTYPE {exc.name}>)") from None
    except EntitiesForbidden as exc:
        raise PayloadError(f"{what}: entity declarations are not allowed ({exc.name!r})") from None
    except ExternalReferenceForbidden as exc:
        raise PayloadError(f"{what}: external references are not allowed ({exc.sysid!r})") from None
    except ET.ParseError as exc:
        raise PayloadError(f"{what}: not well-formed XML: {exc}") from None
    except UnicodeError as exc:
        raise PayloadError(f"{what}: cannot be encoded for the XML parser: {exc}") from None
    return root
