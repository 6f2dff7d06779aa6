"""HTML bytes -> (title, interleaved text/image nodes). Shared by the WARC/ARC and plain-HTML parsers.

Main content comes from trafilatura (boilerplate such as menus and footers is dropped). Its XML output
keeps text blocks and `<graphic>` elements in reading order, which is exactly the interleaving RealSyn
needs. Trafilatura gives up on very short pages or drops their images (its fallbacks are text-only), so
a small lxml walker over the page body takes over when trafilatura returns too little.
"""
from __future__ import annotations

import codecs
import copy
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional
from urllib.parse import urljoin, urlsplit

import lxml.etree
import lxml.html
import trafilatura
from trafilatura.settings import use_config

from . import Node

try:  # optional: statistical charset detection for pages that declare nothing
    import charset_normalizer
except ImportError:  # pragma: no cover - the fallback chain below still decodes every page
    charset_normalizer = None

# ---------------------------------------------------------------------------------------------------
# Charset handling
# ---------------------------------------------------------------------------------------------------

_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_META_SCAN_BYTES = 4096
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# How much more "chaos" (charset_normalizer's mess ratio, 0..1) windows-1252 may show and still win.
_CHAOS_TIE = 0.1
# Browsers (WHATWG Encoding) decode these labels as windows-1252; pages rely on it for curly quotes.
_WINDOWS_1252_ALIASES = {"iso8859-1", "latin-1", "latin1", "iso-8859-1", "us-ascii", "ascii", "l1"}


def charset_from_content_type(content_type: Optional[str]) -> Optional[str]:
    if not content_type:
        return None
    match = _HEADER_CHARSET.search(content_type)
    return match.group(1) if match else None


def _normalise_charset(label: Optional[str]) -> Optional[str]:
    """A Python codec name for an HTML charset label, or None when Python does not know it."""
    if not label:
        return None
    label = label.strip().lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _try_decode(data: bytes, encoding: Optional[str]) -> Optional[str]:
    if not encoding:
        return None
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _detected_charset(data: bytes) -> Optional[str]:
    if charset_normalizer is None:
        return None
    matches = charset_normalizer.from_bytes(data[:200_000])
    best = matches.best()
    if best is None:
        return None
    # Short Western-European text is ambiguous between the windows-125x code pages (the same bytes
    # are nearly as "clean" in each); windows-1252, the web's legacy default (WHATWG), wins a near tie.
    # Cyrillic, Greek or Central-European pages do not list it as a candidate at all.
    for match in matches:
        if _normalise_charset(match.encoding) == "cp1252" and match.chaos <= best.chaos + _CHAOS_TIE:
            return "cp1252"
    return best.encoding


# A page whose non-ASCII bytes are at least this much valid UTF-8 is UTF-8 with a few stray bytes
# (a common crawl artefact: a snippet pasted in another encoding), not text in a legacy code page:
# statistical detection would turn all of it into mojibake to account for the strays.
_UTF8_VALID_SHARE = 0.75
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _mostly_utf8(data: bytes) -> Optional[str]:
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if not high:
        return None
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
    return text if replaced <= high * (1 - _UTF8_VALID_SHARE) else None


def decode_html(data: bytes, content_type: Optional[str] = None) -> tuple[str, str]:
    """Decode page bytes to text; returns (text, codec used).

    Order: byte-order mark, HTTP Content-Type charset, <meta> charset, strict UTF-8, UTF-8 with
    replacement characters when most non-ASCII bytes are valid UTF-8, statistical detection, then
    windows-1252 with replacement characters (it never fails, so a page always decodes).
    A declared charset that does not decode the bytes is treated as a lie and the next step is tried.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    meta = _META_CHARSET.search(data[:_META_SCAN_BYTES])
    candidates = [
        _normalise_charset(charset_from_content_type(content_type)),
        _normalise_charset(meta.group(1).decode("ascii", "ignore")) if meta else None,
        "utf-8",
    ]
    for encoding in candidates:
        text = _try_decode(data, encoding)
        if text is not None:
            return text, encoding
    mostly_utf8 = _mostly_utf8(data)
    if mostly_utf8 is not None:
        return mostly_utf8, "utf-8"
    detected = _normalise_charset(_detected_charset(data))
    text = _try_decode(data, detected)
    if text is not None:
        return text, detected
    declared = [c for c in candidates[:2] if c]
    fallback = declared[0] if declared else "cp1252"
    return data.decode(fallback, errors="replace"), fallback


# ---------------------------------------------------------------------------------------------------
# Page preparation: absolute image URLs, tracking pixels removed
# ---------------------------------------------------------------------------------------------------

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
# lxml refuses NUL, most C0 controls and the non-characters U+FFFE/U+FFFF in text and attributes.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_LAZY_SRC_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src", "data-url")
_PIXEL_MAX_SIDE = 2
_DIMENSION = re.compile(r"^\s*(\d+)")
_STYLE_DIMENSION = re.compile(r"(?<![-\w])(width|height)\s*:\s*(\d+)px", re.IGNORECASE)
# File names tracking beacons and layout spacers use ("1x1.gif", "pixel.gif", "spacer.gif", ...).
_TRACKING_NAME = re.compile(
    r"(?i)(1x1|pixel|spacer|blank|clear|transparent|beacon|track(?:ing|er)?)[^/]*\.gif$"
)


def _parse_tree(text: str) -> Optional[lxml.html.HtmlElement]:
    text = _CONTROL_CHARS.sub("", _XML_DECLARATION.sub("", text, count=1))
    if not text.strip():
        return None
    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(text, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return None


def _title_of(tree: lxml.html.HtmlElement) -> Optional[str]:
    for xpath in ("//head/title//text()", "//meta[@property='og:title']/@content", "//h1//text()"):
        title = _collapse(" ".join(tree.xpath(xpath)))
        if title:
            return title
    return None


def _base_url(tree: lxml.html.HtmlElement, page_url: Optional[str]) -> Optional[str]:
    hrefs = tree.xpath("//base/@href")
    if hrefs and hrefs[0].strip():
        try:
            return urljoin(page_url or "", hrefs[0].strip())
        except ValueError:
            return page_url
    return page_url


def _dimension(value: Optional[str]) -> Optional[int]:
    match = _DIMENSION.match(value or "")
    return int(match.group(1)) if match else None


def _is_tracking_pixel(img: lxml.html.HtmlElement, src: str) -> bool:
    sides = [_dimension(img.get("width")), _dimension(img.get("height"))]
    sides += [int(m.group(2)) for m in _STYLE_DIMENSION.finditer(img.get("style") or "")]
    if any(side is not None and side <= _PIXEL_MAX_SIDE for side in sides):
        return True
    return bool(_TRACKING_NAME.search(urlsplit(src).path))


# Placeholders lazy-loading scripts put in `src` until the real image scrolls into view.
_PLACEHOLDER_NAME = re.compile(
    r"(?i)(lazy|placeholder|spacer|blank|loading|loader|transparent|pixel|1x1|dummy|empty|grey|gray)[^/]*"
    r"\.(gif|png|svg|webp)$")
_SRCSET_ATTRIBUTES = ("data-srcset", "data-lazy-srcset", "srcset")
# "a.jpg 320w, b.jpg 2x": a candidate list, not a URL (some pages put one in data-src too).
_HAS_DESCRIPTOR = re.compile(r"\s\d+(?:\.\d+)?[wxh]\s*(?:,|$)", re.IGNORECASE)
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$", re.IGNORECASE)


def srcset_candidates(srcset: str) -> list[tuple[str, float, str]]:
    """(url, size, unit) of a srcset, unit "w" (width) or "x" (density, 1x when none), as the HTML
    standard parses it: a URL is a run of non-space characters (commas inside it allowed, trailing
    commas end the candidate), then descriptors up to the next comma."""
    candidates, i, n = [], 0, len(srcset)
    while i < n:
        while i < n and (srcset[i].isspace() or srcset[i] == ","):
            i += 1
        start = i
        while i < n and not srcset[i].isspace():
            i += 1
        url = srcset[start:i]
        descriptors = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = srcset.find(",", i)
            end = n if end < 0 else end
            descriptors, i = srcset[i:end].strip(), end + 1
        if not url:
            continue
        size, unit = 1.0, "x"
        for descriptor in descriptors.split():
            match = _DESCRIPTOR.match(descriptor)
            if match:
                size, unit = float(match.group(1)), match.group(2).lower()
        candidates.append((url, size, unit))
    return candidates


def largest_candidate(srcset: str) -> Optional[str]:
    """The largest image of a srcset: by width when any candidate gives one, else by density."""
    candidates = [c for c in srcset_candidates(srcset) if not c[0].startswith("data:")]
    if not candidates:
        return None
    widths = [c for c in candidates if c[2] == "w"]
    return max(widths or candidates, key=lambda c: c[1])[0]


def _single_url(value: Optional[str]) -> Optional[str]:
    """An attribute value as one URL: a candidate list gives its largest; data: URIs are placeholders."""
    value = (value or "").strip()
    if _HAS_DESCRIPTOR.search(value) or "," in value and " " in value:
        value = largest_candidate(value) or ""
    return value if value and not value.startswith("data:") else None


def is_placeholder(src: str) -> bool:
    return src.startswith("data:") or bool(_PLACEHOLDER_NAME.search(urlsplit(src).path))


def _picture_srcsets(img: lxml.html.HtmlElement) -> list[str]:
    # libxml2 does not know <source> is void and nests the <img> inside it: look up to the <picture>
    picture = next(img.iterancestors("picture"), None)
    if picture is None:
        return []
    return [source.get(attribute) for source in picture.iter("source")
            for attribute in _SRCSET_ATTRIBUTES if source.get(attribute)]


def _raw_image_src(img: lxml.html.HtmlElement) -> Optional[str]:
    """The real source of an <img>. Lazy-loading pages keep it in data-* (or a srcset) and put a
    placeholder (1x1 GIF, data: URI, "lazy_placeholder.gif", nothing) in src. Order: a lazy data-*
    URL, the largest candidate of the img's and its <picture>'s srcsets, then src unless a placeholder."""
    for attribute in _LAZY_SRC_ATTRIBUTES:
        lazy = _single_url(img.get(attribute))
        if lazy and not is_placeholder(lazy):
            return lazy
    srcsets = [img.get(attribute) for attribute in _SRCSET_ATTRIBUTES if img.get(attribute)]
    candidates = [c for srcset in srcsets + _picture_srcsets(img) for c in srcset_candidates(srcset)
                  if not is_placeholder(c[0])]
    if candidates:
        widths = [c for c in candidates if c[2] == "w"]
        return max(widths or candidates, key=lambda c: c[1])[0]
    src = _single_url(img.get("src"))
    return src if src and not is_placeholder(src) else None


def absolute_image_url(src: str, base_url: Optional[str]) -> Optional[str]:
    """Resolve against the page; only http(s) URLs can be fetched, so anything else is None."""
    try:
        url = urljoin(base_url, src) if base_url else src
        scheme = urlsplit(url).scheme
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    if url.startswith("//"):
        url, scheme = "http:" + url, "http"
    if scheme not in ("http", "https") or _CONTROL_CHARS.search(url):
        return None
    # a literal space is percent-encoded by browsers; a URL never carries srcset descriptors
    return url.strip().replace(" ", "%20")


# Page furniture: images there are menus, logos and teasers, not content. A <header> inside an
# <article>/<main> is the article's own (its lead photo), so only a page-level <header> counts.
_FURNITURE_TAGS = {"nav", "footer", "aside", "menu"}
_FURNITURE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "menu", "menubar"}
# Icons and buttons, by a word in the class/id/alt of the image or its link/button, or its file name.
_ICON_WORDS = re.compile(
    r"(?i)(?:^|[\s_\-./])(icons?|ico|logo|sprites?|social|share|sharing|facebook|twitter|linkedin|pinterest|"
    r"instagram|whatsapp|youtube|tiktok|rss|menu|hamburger|burger|arrows?|chevron|caret|btn|button|badge|"
    r"favicon|emoji|smiley|spinner|avatar)(?=$|[\s_\-./\d])")
_ICON_MAX_SIDE = 48


def _in_page_furniture(img: lxml.html.HtmlElement) -> bool:
    ancestors = list(img.iterancestors())
    tags = {a.tag for a in ancestors if isinstance(a.tag, str)}
    if tags & _FURNITURE_TAGS or any((a.get("role") or "").lower() in _FURNITURE_ROLES for a in ancestors):
        return True
    return "header" in tags and not tags & {"article", "main"}


def _is_icon(img: lxml.html.HtmlElement, url: str) -> bool:
    sides = [_dimension(img.get("width")), _dimension(img.get("height"))]
    if all(side is not None and side <= _ICON_MAX_SIDE for side in sides):
        return True
    parent = img.getparent()
    alt = img.get("alt") or ""
    # an icon's alt is a label ("Share", "Menu"); a described photo may mention a brand ("the Facebook office")
    labels = [img.get("class"), img.get("id"), alt if len(alt.split()) <= 2 else None]
    if parent is not None and parent.tag in ("a", "button", "span"):
        labels += [parent.get("class"), parent.get("id")]
    file_name = urlsplit(url).path.rsplit("/", 1)[-1]
    return any(_ICON_WORDS.search(label) for label in labels + [file_name] if label)


def _prepare_images(tree: lxml.html.HtmlElement, base_url: Optional[str]) -> set[str]:
    """Rewrite every <img> in place: absolute src, lazy attributes folded in, pixels/non-http removed.
    Returns the URLs of navigation/header/footer/aside images and icons, which are left in the tree
    (they are dropped from what the extractor keeps, and counted)."""
    furniture: set[str] = set()
    for img in list(tree.iter("img")):
        src = _raw_image_src(img)
        url = absolute_image_url(src, base_url) if src else None
        if url is None or _is_tracking_pixel(img, url):
            img.drop_tree()  # keeps the tail text
            continue
        img.set("src", url)
        for attribute in _LAZY_SRC_ATTRIBUTES + _SRCSET_ATTRIBUTES:
            img.attrib.pop(attribute, None)
        if _in_page_furniture(img) or _is_icon(img, url):
            furniture.add(url)
    return furniture


# ---------------------------------------------------------------------------------------------------
# Trafilatura path
# ---------------------------------------------------------------------------------------------------

# Trafilatura's default minimum (250 chars) sends short pages to text-only rescues that lose images.
_MIN_EXTRACTED_SIZE = 50
# Below this much text a trafilatura result without images is retried with the walker.
_SHORT_TEXT_CHARS = 250
_XML_TEXT_BLOCKS = {"p", "head", "item", "quote", "cell", "code"}


def _trafilatura_config():
    config = use_config()
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", str(_MIN_EXTRACTED_SIZE))
    config.set("DEFAULT", "MIN_OUTPUT_SIZE", "1")
    config.set("DEFAULT", "MIN_EXTRACTED_COMM_SIZE", "1")
    config.set("DEFAULT", "MIN_OUTPUT_COMM_SIZE", "1")
    return config


_TRAFILATURA_CONFIG = _trafilatura_config()


@dataclass
class _Item:
    """A node before positions are assigned."""
    kind: str
    text: Optional[str] = None
    image_url: Optional[str] = None
    alt: Optional[str] = None


def _collapse(text: Optional[str]) -> str:
    return " ".join((text or "").split())


def _graphic_item(graphic: lxml.etree._Element) -> Optional[_Item]:
    src = graphic.get("src")
    if not src or absolute_image_url(src, None) is None:
        return None
    alt = _collapse(graphic.get("alt") or graphic.get("title")) or None
    return _Item("image", image_url=src, alt=alt)


def _walk_trafilatura_xml(element: lxml.etree._Element) -> Iterator[_Item]:
    for child in element:
        if child.tag == "graphic":
            item = _graphic_item(child)
            if item:
                yield item
        elif child.tag in _XML_TEXT_BLOCKS:
            text = _collapse(" ".join(child.itertext()))
            if text:
                yield _Item("text", text=text)
            # images inside a paragraph follow its text: a caption-like order is the common case
            for graphic in child.iter("graphic"):
                item = _graphic_item(graphic)
                if item:
                    yield item
        else:  # list, table, row, div...: containers, look inside
            yield from _walk_trafilatura_xml(child)


def _trafilatura_items(tree: lxml.html.HtmlElement, page_url: Optional[str]) -> list[_Item]:
    xml = trafilatura.extract(
        copy.deepcopy(tree),  # trafilatura edits the tree it is given; the walker may still need it
        url=page_url,
        output_format="xml",
        include_images=True,
        include_comments=False,
        include_tables=True,
        include_links=False,
        include_formatting=False,
        fast=True,  # its external fallbacks (readability, justext) are text-only and drop images
        config=_TRAFILATURA_CONFIG,
    )
    if not xml:
        return []
    root = lxml.etree.fromstring(xml.encode("utf-8"))
    main = root.find("main")
    return list(_walk_trafilatura_xml(main if main is not None else root))


# ---------------------------------------------------------------------------------------------------
# Fallback walker
# ---------------------------------------------------------------------------------------------------

_SKIPPED_TAGS = {
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button",
    "select", "option", "svg", "iframe", "object", "embed", "head", "title", "menu",
}
_BLOCK_TEXT_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "figcaption", "pre", "dt", "dd", "td",
    "th", "caption",
}
_INLINE_TAGS = {
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "dfn", "em", "font", "i", "kbd",
    "label", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time", "tt",
    "u", "var", "wbr",
}


def _visible_text(element: lxml.html.HtmlElement) -> str:
    """Text of an element without script/style/nav...; block children are separated by a space."""
    parts = [element.text or ""]
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else None
        if tag is not None and tag not in _SKIPPED_TAGS:
            separator = "" if tag in _INLINE_TAGS else " "
            parts.append(separator + _visible_text(child) + separator)
        parts.append(child.tail or "")
    return "".join(parts)


def _image_items(element: lxml.html.HtmlElement) -> Iterator[_Item]:
    """The <img> elements of a subtree (itself included) outside skipped sections, in document order."""
    tag = element.tag if isinstance(element.tag, str) else None
    if tag is None or tag in _SKIPPED_TAGS:
        return
    if tag == "img":
        alt = _collapse(element.get("alt") or element.get("title")) or None
        yield _Item("image", image_url=element.get("src"), alt=alt)
        return
    for child in element:
        yield from _image_items(child)


def _walk_html(element: lxml.html.HtmlElement) -> Iterator[_Item]:
    """Block elements become one text node each; runs of inline content inside containers are joined."""
    pending: list[str] = [element.text or ""]

    def flush() -> Iterator[_Item]:
        text = _collapse("".join(pending))
        pending.clear()
        if text:
            yield _Item("text", text=text)

    for child in element:
        tag = child.tag if isinstance(child.tag, str) else None
        if tag is None or tag in _SKIPPED_TAGS:
            pass
        elif tag == "img":
            yield from flush()
            yield from _image_items(child)
        elif tag in _INLINE_TAGS:
            pending.append(_visible_text(child))
            if child.find(".//img") is not None:
                yield from flush()
                yield from _image_items(child)
        elif tag in _BLOCK_TEXT_TAGS:
            yield from flush()
            text = _collapse(_visible_text(child))
            if text:
                yield _Item("text", text=text)
            yield from _image_items(child)
        else:
            yield from flush()
            yield from _walk_html(child)
        pending.append(child.tail or "")
    yield from flush()


def _walker_items(tree: lxml.html.HtmlElement) -> list[_Item]:
    body = tree.find("body")
    return list(_walk_html(body if body is not None else tree))


# ---------------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------------

def _choose_items(trafilatura_items: list[_Item], walker: Callable[[], list[_Item]]) -> list[_Item]:
    if not trafilatura_items:
        return walker()
    has_image = any(item.kind == "image" for item in trafilatura_items)
    text_chars = sum(len(item.text or "") for item in trafilatura_items)
    if has_image or text_chars >= _SHORT_TEXT_CHARS:
        return trafilatura_items
    walked = walker()
    # a short page whose images trafilatura dropped: the walker keeps them in place
    return walked if any(item.kind == "image" for item in walked) else trafilatura_items


def _extract_nodes(html: str, page_url: Optional[str]) -> tuple[Optional[str], list[Node], int]:
    """(title, nodes, images dropped as navigation/icons although the extractor kept them)."""
    tree = _parse_tree(html)
    if tree is None:
        return None, [], 0
    if page_url:
        page_url = _CONTROL_CHARS.sub("", page_url)  # a damaged record header must not break lxml
    title = _title_of(tree)
    base_url = _base_url(tree, page_url)
    furniture = _prepare_images(tree, base_url)
    try:
        main_items = _trafilatura_items(tree, base_url)
    except Exception:  # noqa: BLE001 - heuristic third-party code; the walker still reads the body
        main_items = []
    items = _choose_items(main_items, lambda: _walker_items(tree))
    kept = [item for item in items if item.kind != "image" or item.image_url not in furniture]
    nodes = [
        Node(position=i, kind=item.kind, text=item.text, image_url=item.image_url, alt=item.alt)
        for i, item in enumerate(kept)
    ]
    return title, nodes, len(items) - len(kept)


def extract_html_nodes(html: str, page_url: Optional[str]) -> tuple[Optional[str], list[Node]]:
    """Main content of a decoded page as (title, nodes) with absolute image URLs.

    Never raises on malformed markup: garbage yields (None, []).
    """
    title, nodes, _ = _extract_nodes(html, page_url)
    return title, nodes


def extract_html_bytes(
    data: bytes, page_url: Optional[str], content_type: Optional[str] = None
) -> tuple[Optional[str], list[Node], str]:
    """Decode then extract; returns (title, nodes, codec used)."""
    text, encoding = decode_html(data, content_type)
    title, nodes = extract_html_nodes(text, page_url)
    return title, nodes, encoding


# ---------------------------------------------------------------------------------------------------
# Extraction with a verdict: what the parsers report as bad input
# ---------------------------------------------------------------------------------------------------

# Share of C0 control characters (other than tab/newline/return) and U+FFFD in the decoded start of a
# page above which it is binary data, not text: no page is written like that.
_BINARY_SHARE = 0.05
_BINARY_SAMPLE_CHARS = 10_000
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]")


@dataclass
class HtmlResult:
    title: Optional[str]
    nodes: list[Node]
    encoding: str
    # (kind, reason) of a problem to report: "binary_content" / "no_content" (the page is dropped) or
    # "lossy_decoding" (the page is kept: some bytes fitted no charset and became U+FFFD)
    problem: Optional[tuple[str, str]] = None
    # navigation/header/footer/aside images and icons the extractor kept, dropped (the ingest counter)
    images_dropped: int = 0

    @property
    def keep(self) -> bool:
        return self.problem is None or self.problem[0] == "lossy_decoding"


def extract_html(data: bytes, page_url: Optional[str], content_type: Optional[str] = None) -> HtmlResult:
    """Decode and extract a page, and judge it: binary garbage and pages without any text or image
    are reported and dropped; a page that only decodes with replacement characters is kept and
    reported. Never raises on malformed markup."""
    text, encoding = decode_html(data, content_type)
    sample = text[:_BINARY_SAMPLE_CHARS]
    bad_chars = len(_NOT_TEXT.findall(sample))
    if sample and bad_chars / len(sample) > _BINARY_SHARE:
        return HtmlResult(None, [], encoding, ("binary_content",
                          f"{bad_chars} of the first {len(sample)} characters are control or undecodable "
                          f"characters (decoded as {encoding}): not an HTML page"))
    title, nodes, dropped = _extract_nodes(text, page_url)
    if not nodes:
        return HtmlResult(title, [], encoding, ("no_content", "no text or image found in the page "
                                                "(empty, script-only or unparseable markup)"))
    replaced = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
    if replaced > 0:
        return HtmlResult(title, nodes, encoding, ("lossy_decoding",
                          f"{replaced} byte sequences fit no charset (declared or detected); decoded as "
                          f"{encoding} with replacement characters"), dropped)
    return HtmlResult(title, nodes, encoding, images_dropped=dropped)
