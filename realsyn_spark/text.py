"""Sentence segmentation and the sentence-level rules of Real-World Data Extraction.

The paper segments with NLTK's Punkt, whose model files cannot be downloaded here. This is an offline
rule-based segmenter in the Punkt style: split after . ! ? (and closing quotes/brackets) followed by
whitespace and an upper-case letter, digit, opening quote or a brand name like "eBay", except after known
abbreviations, initials and decimal numbers — unless the abbreviation is one that often ends sentences
("etc.", "U.S.") and a frequent sentence starter follows. Measured on a 48-paragraph hand-labelled set
(tests/segmentation_gold.py; bench/bench_filters_segmentation.py prints precision/recall). The regexes
below are written in the subset Java and Python share, so the same rule runs as a Spark expression
(`rlike`) and in Python tests.

Why not Spark NLP's rule-based SentenceDetector (the other offline choice): it needs its own jar
(`spark-nlp_2.13`) on every cluster and a DocumentAssembler -> SentenceDetector pipeline per job, for
rules of the same kind; this segmenter needs nothing beyond Spark and is tested line by line in Python.
"""
from __future__ import annotations

import re
import unicodedata

ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st vs etc inc ltd co corp dept univ approx fig figs no nos vol eds ed al
jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col lt sgt capt rev hon est e.g i.e u.s u.k
a.m p.m
""".split())

# Footnote and citation markers written straight after the end punctuation ("Hinton.[1] It", "sea.² It",
# "cited.[a][b] She", "[citation needed]"): part of the sentence they close, and no space before them.
_FOOTNOTE = r"(?:\[(?:\d{1,3}|[a-z]|[a-z ]{4,20})\]|[¹²³⁰-⁹]+)"
# A sentence starts with an upper-case letter, a digit, a CJK character, an opening quote/bracket, or a
# lower-case brand name with an inner capital ("eBay", "iPhone").
_BOUNDARY = re.compile(r"""([.!?…]+["')\]’”]*""" + _FOOTNOTE + r"""*)\s+(?=["'(\[‘“]?(?:[A-Z0-9À-Ý\u3040-\u30ff\u3400-\u9fff]|[a-z]+[A-Z]))""")
_TRAILING_FOOTNOTES = re.compile(_FOOTNOTE + "+$")
# Chinese/Japanese full-width end punctuation ends a sentence with no space after it.
_CJK_BOUNDARY = re.compile(r"([。！？]+[」』”’）)]*)\s*(?=\S)")
_LAST_WORD = re.compile(r"(\S+)$")
_NEXT_WORD = re.compile(r"""["'(\[‘“]?([^\s"'()\[\]‘’“”.,;:!?]+)""")

# Abbreviations that often end a sentence ("... in the U.S. The next day"), and words that begin
# sentences far more often than they follow such an abbreviation inside one (Punkt's orthographic and
# collocation heuristics, reduced to lists). After one of these abbreviations, a following frequent
# sentence starter is taken as a new sentence.
SENTENCE_FINAL_ABBREVIATIONS = frozenset("etc u.s u.k inc ltd co corp jr sr a.m p.m al".split())
SENTENCE_STARTERS = frozenset("""
the a an it he she they we i this that these those there his her their our my its in on at but and so then
after when while if as for however meanwhile today yesterday later now
""".split())

# "a.m." / "p.m." end the sentence before any capitalised word except those that continue a time inside
# one: a weekday, a month or a time zone ("at 9 a.m. Monday", "at 6 p.m. EST").
TIME_ABBREVIATIONS = frozenset(("a.m", "p.m"))
TIME_CONTINUATIONS = frozenset("""
monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun
january february march april may june july august september october november december jan feb mar apr
jun jul aug sep sept oct nov dec
utc gmt bst cet cest eet est edt cst cdt mst mdt pst pdt et ct mt pt ist jst aest
eastern central pacific mountain
""".split())

# German (and Nordic) ordinal numbers are written "30." ("am 30. März 2017", "im 19. Jahrhundert"): a
# number of one to three digits with a period is not a sentence end when a month name follows, or when
# an article or article-preposition contraction precedes it (they cannot end a sentence).
MONTHS = frozenset("""
januar jänner februar märz april mai juni juli august september oktober november dezember
january february march may june july october december
jan feb mär mrz apr jun jul aug sep sept okt oct nov dez dec
""".split())
ORDINAL_PRECEDERS = frozenset("am im vom zum zur beim der die das dem den des dieser diesem diesen jeden jedem".split())
_ORDINAL_NUMBER = re.compile(r"(?:^|\s)(\S+)\s+\d{1,3}\.$")

# Emoji: pictographs, emoticons, transport/map, dingbats, symbols & pictographs ext., flags, VS-16.
EMOJI_PATTERN = (
    "[\\x{1F000}-\\x{1FAFF}\\x{2600}-\\x{27BF}\\x{2B00}-\\x{2BFF}\\x{1F1E6}-\\x{1F1FF}\\x{FE0F}\\x{200D}]"
)
# URLs: a scheme, a www. host, or a bare domain with a common TLD and optional path.
URL_PATTERN = (
    "(?i)(\\b[a-z][a-z0-9+.-]*://\\S+|\\bwww\\.\\S+|"
    "\\b[a-z0-9-]+(\\.[a-z0-9-]+)*\\.(com|org|net|edu|gov|io|co|uk|de|fr|info|biz|ly|me|tv)\\b(/\\S*)?)"
)
# Word tokens: whitespace-separated chunks holding at least one letter or digit.
WORD_PATTERN = "[\\p{L}\\p{N}]"


def _python_regex(java_pattern: str) -> re.Pattern:
    # Java writes code points as \x{1F600}; Python's re wants \U0001F600.
    converted = re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: "\\U" + m.group(1).rjust(8, "0"), java_pattern)
    converted = converted.replace("[\\p{L}\\p{N}]", r"[^\W_]")
    return re.compile(converted)


EMOJI_RE = _python_regex(EMOJI_PATTERN)
URL_RE = _python_regex(URL_PATTERN)
WORD_RE = _python_regex(WORD_PATTERN)


def _ends_with_abbreviation(chunk: str) -> bool:
    match = _LAST_WORD.search(_TRAILING_FOOTNOTES.sub("", chunk))
    if not match:
        return False
    word = match.group(1).rstrip(".!?…\"')]’”").lower().lstrip("(\"'‘“")
    if word in ABBREVIATIONS:
        return True
    # Initials ("J. R. R.") and single letters before a period are not sentence ends.
    return len(word) == 1 and word.isalpha()


def _abbreviation_ends_sentence(chunk: str, following: str) -> bool:
    """An abbreviation that often ends sentences, followed by a frequent sentence starter."""
    last = _LAST_WORD.search(chunk)
    nxt = _NEXT_WORD.match(following)
    if not last or not nxt:
        return False
    word = last.group(1).rstrip(".!?…\"')]’”").lower().lstrip("(\"'‘“")
    following_word = nxt.group(1).lower()
    if word in TIME_ABBREVIATIONS:
        return following_word not in TIME_CONTINUATIONS
    return word in SENTENCE_FINAL_ABBREVIATIONS and following_word in SENTENCE_STARTERS


def _is_ordinal(chunk: str, following: str) -> bool:
    """"am 30." before "März": a German ordinal number, not a sentence end."""
    match = _ORDINAL_NUMBER.search(chunk)
    if not match:
        return False
    nxt = _NEXT_WORD.match(following)
    return (match.group(1).lower() in ORDINAL_PRECEDERS
            or (nxt is not None and nxt.group(1).lower() in MONTHS))


def split_sentences(paragraph: str | None) -> list[str]:
    """Split a paragraph into sentences; whitespace is collapsed and empty pieces dropped."""
    if not paragraph:
        return []
    text = " ".join(unicodedata.normalize("NFC", paragraph).split())
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        end = match.end(1)
        chunk, following = text[start:end], text[match.end():]
        if match.group(1).startswith(".") and (
                (_ends_with_abbreviation(chunk) and not _abbreviation_ends_sentence(chunk, following))
                or _is_ordinal(chunk, following)):
            continue
        sentences.append(chunk.strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [piece for s in sentences for piece in _split_cjk(s) if piece]


def _split_cjk(sentence: str) -> list[str]:
    """Split after 。！？, which end Chinese/Japanese sentences without a following space."""
    if not _CJK_BOUNDARY.search(sentence):
        return [sentence]
    return [piece.strip() for piece in _CJK_BOUNDARY.sub("\\1\n", sentence).split("\n") if piece.strip()]


# Han, Hiragana, Katakana and Hangul characters: text written without spaces between words.
_CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def count_words(sentence: str) -> int:
    """Whitespace tokens holding a letter or digit; in scripts written without spaces (Chinese, Japanese)
    every character counts as a word (Chinese words are one or two characters), so the word-count rules
    measure such sentences instead of seeing one huge "word"."""
    count = 0
    for token in sentence.split():
        cjk = len(_CJK_CHAR.findall(token))
        rest = _CJK_CHAR.sub(" ", token)
        count += cjk + sum(1 for piece in rest.split() if WORD_RE.search(piece))
    return count


def has_emoji(sentence: str) -> bool:
    return EMOJI_RE.search(sentence) is not None


def has_url(sentence: str) -> bool:
    return URL_RE.search(sentence) is not None


_SPACED_PUNCT = re.compile(r"([.,!?;:()\"“”‘’\[\]])")


def normalise_style(sentence: str) -> str:
    """The released RealSyn text style: lower-cased, punctuation and clitics spaced ("it 's")."""
    text = sentence.lower()
    text = re.sub(r"(\w)'(s|re|ve|ll|d|m|t)\b", r"\1 '\2", text)
    text = _SPACED_PUNCT.sub(r" \1 ", text)
    return " ".join(text.split())


def dedup_key(sentence: str) -> str:
    """Normalised form for exact-duplicate detection: case, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


# ---------------------------------------------------------------------------------------------------
# Document text nodes -> paragraphs: page furniture removed, paragraphs cut by a page/block break joined
# ---------------------------------------------------------------------------------------------------

# A text node that is only a page number: "12", "- 12 -", "Page 3", "Seite 3 von 10", "3 / 10", "xii".
_PAGE_NUMBER = re.compile(
    r"(?i)^[\s\-–—|]*(?:(?:page|seite|p\.|s\.)\s*)?(?:\d{1,4}|[ivxlc]{1,7})(?:\s*(?:/|of|von|sur)\s*\d{1,4})?[\s\-–—|]*$")
# Running headers/footers: short lines repeated on many pages (digits ignored: "Chapter 2 · page 14").
_FURNITURE_MAX_WORDS = 15
_FURNITURE_MIN_PAGE_SHARE = 0.5
# A paragraph ends with end punctuation (possibly inside quotes/brackets) or a colon.
_ENDS_PARAGRAPH = re.compile(r"""[.!?…:;。！？]["')\]’”»]*$""")
_CONTINUES = re.compile(r"^[a-zà-ÿß]")
# Shorter pieces are headings, labels or list items ("Ingredients" | "flour, 200 g"), not cut sentences.
_MIN_CUT_WORDS = 4


def _furniture_key(text: str) -> str:
    return " ".join(re.sub(r"\d+", "#", text.lower()).split())


def _running_furniture(nodes: list[tuple[int, str, int | None]]) -> set[str]:
    """Keys of short lines that frame other text (first or last text node of a page that has more text)
    on at least half of the pages (and at least two): running headers and footers. A line that is a
    page's only text is content, however often it repeats. Only documents with pages (PDFs) have them."""
    by_page: dict[int, list[str]] = {}
    for _, text, page in nodes:
        if page is not None:
            by_page.setdefault(page, []).append(text)
    if len(by_page) < 2:
        return set()
    pages: dict[str, set[int]] = {}
    for page, texts in by_page.items():
        if len(texts) < 2:
            continue
        for text in {texts[0], texts[-1]}:
            if len(text.split()) <= _FURNITURE_MAX_WORDS:
                pages.setdefault(_furniture_key(text), set()).add(page)
    need = max(2, _FURNITURE_MIN_PAGE_SHARE * len(by_page))
    return {key for key, seen in pages.items() if len(seen) >= need}


def continues(previous: str, following: str) -> bool:
    """`following` continues the paragraph `previous` was cut from: no end punctuation before the break
    and a lower-case start after it ("you will get no" | "information.")."""
    return (not _ENDS_PARAGRAPH.search(previous) and bool(_CONTINUES.match(following))
            and len(previous.split()) >= _MIN_CUT_WORDS)


def document_paragraphs(nodes: list[tuple[int, str, int | None]]) -> tuple[list[tuple[int, str]], int, int]:
    """Text nodes (position, text, page) of one document in reading order -> (paragraphs as (position of
    the first piece, text), page furniture nodes dropped, breaks joined).

    Page numbers and running headers/footers are dropped (they would sit between the halves of a cut
    sentence and become sentences of their own); a paragraph that continues after a page or block break
    is joined to the piece before it, end-of-line hyphenation undone ("exam-" | "ple")."""
    furniture = _running_furniture(nodes)
    paragraphs: list[list] = []
    dropped = joined = 0
    for position, text, page in nodes:
        text = " ".join(text.split())
        if not text:
            continue
        if _PAGE_NUMBER.match(text) or (page is not None and _furniture_key(text) in furniture):
            dropped += 1
            continue
        if paragraphs and continues(paragraphs[-1][1], text):
            previous = paragraphs[-1][1]
            paragraphs[-1][1] = previous[:-1] + text if previous.endswith("-") else f"{previous} {text}"
            joined += 1
            continue
        paragraphs.append([position, text])
    return [(position, text) for position, text in paragraphs], dropped, joined
