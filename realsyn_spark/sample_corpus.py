"""A small, deterministic, realistic input corpus for demos and end-to-end tests.

    python -m realsyn_spark.sample_corpus OUT_DIR [--scale N] [--seed S]

Writes WARC (with the page images as records of the same archive), PDF, OBELICS JSONL and plain HTML
sources, each holding interleaved English paragraphs and real decodable images, plus the cases every
stage must cope with: images each filter drops (small, too wide, too tall, exact duplicates, bytes
that do not decode), URL-only images on hosts the fetcher must refuse, sentences each rule drops
(emoji, URL, under 3 words, over 81 words, repeated across documents), a windows-1252 page, a WARC
with a corrupt and a truncated gzip member, a truncated PDF and a malformed JSONL line.

Everything derives from `random.Random(seed)`; timestamps, record IDs and PDF IDs are fixed, so the
same seed writes byte-identical files.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Union
from urllib.parse import urlsplit

import pymupdf
from PIL import Image, ImageDraw, ImageFont, ImageOps
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

# ---------------------------------------------------------------------------------------------------
# Sizes of the corpus at scale=1 (documents multiply with `scale`)
# ---------------------------------------------------------------------------------------------------

WARC_PAGES = 24
BROKEN_WARC_GOOD_PAGES = 4
OBELICS_RECORDS = 28
HTML_FILES = 3
PDF_SECTIONS = 6  # each starts a new page
PARAGRAPHS_PER_DOC = (4, 7)
SENTENCES_PER_PARAGRAPH = (2, 6)
IMAGES_PER_DOC = (3, 5)
OBELICS_MALFORMED_LINE = 9  # 0-based line number of the broken JSON line

FIXED_WARC_DATE = "2024-03-01T12:00:00Z"
FIXED_PDF_DATE = "D:20240301120000Z"

BLOCKED_IMAGE_URLS = (
    "http://169.254.169.254/latest/meta-data/x.jpg",  # cloud metadata endpoint: must never be fetched
    "http://10.0.0.5/a.jpg",                          # private network
)
SITES = (
    "https://news.example.com", "https://travel.example.org", "http://www.example.net",
    "https://photos.example.com", "http://blog.example.org",
)

# ---------------------------------------------------------------------------------------------------
# Sentences: a small grammar of people/animals doing things in places
# ---------------------------------------------------------------------------------------------------

PEOPLE = (
    ("A young girl", 1), ("An old man", 1), ("The fisherman", 1), ("A woman in a red coat", 1),
    ("The chef", 1), ("A street musician", 1), ("A tired cyclist", 1), ("The farmer", 1),
    ("A tourist with a map", 1), ("A boy in a yellow raincoat", 1), ("The photographer", 1),
    ("An elderly couple", 2), ("Two children", 2), ("Several hikers", 2), ("The construction workers", 2),
    ("A group of students", 1), ("The baker", 1), ("A nurse", 1), ("Three friends", 2), ("The teacher", 1),
)
ANIMALS = (
    ("A small brown dog", 1), ("A grey cat", 1), ("Two horses", 2), ("A flock of pigeons", 1),
    ("The old sheepdog", 1), ("A pair of swans", 1), ("Three goats", 2), ("A curious fox", 1),
)
# (present participle phrase, past tense phrase)
PEOPLE_ACTIONS = (
    ("carrying a wooden basket of apples", "carried a wooden basket of apples"),
    ("reading a folded newspaper", "read a folded newspaper"),
    ("painting a small garden fence", "painted a small garden fence"),
    ("feeding the ducks with bread", "fed the ducks with bread"),
    ("holding a bright blue umbrella", "held a bright blue umbrella"),
    ("riding a bicycle", "rode a bicycle"),
    ("selling fresh vegetables from a cart", "sold fresh vegetables from a cart"),
    ("taking photographs of the sunset", "took photographs of the sunset"),
    ("climbing a steep rocky path", "climbed a steep rocky path"),
    ("pulling a heavy cart", "pulled a heavy cart"),
    ("watching the fishing boats", "watched the fishing boats"),
    ("cooking soup in a large iron pot", "cooked soup in a large iron pot"),
    ("repairing an old fishing net", "repaired an old fishing net"),
    ("sweeping the front steps", "swept the front steps"),
    ("waiting for the morning bus", "waited for the morning bus"),
    ("playing a guitar for passers-by", "played a guitar for passers-by"),
    ("planting tulips in a long row", "planted tulips in a long row"),
    ("drinking hot coffee from paper cups", "drank hot coffee from paper cups"),
    ("flying a red kite", "flew a red kite"),
    ("building a sandcastle", "built a sandcastle"),
    ("loading crates onto a truck", "loaded crates onto a truck"),
    ("pointing at a distant lighthouse", "pointed at a distant lighthouse"),
    ("pushing a stroller", "pushed a stroller"),
    ("writing in a small notebook", "wrote in a small notebook"),
)
ANIMAL_ACTIONS = (
    ("chasing a tennis ball", "chased a tennis ball"),
    ("sleeping in a patch of sunlight", "slept in a patch of sunlight"),
    ("drinking from a shallow puddle", "drank from a shallow puddle"),
    ("grazing on the wet grass", "grazed on the wet grass"),
    ("watching the people walk past", "watched the people walk past"),
    ("running along the fence", "ran along the fence"),
    ("searching for crumbs", "searched for crumbs"),
    ("swimming slowly in circles", "swam slowly in circles"),
)
PLACES = (
    "in a crowded market", "on a quiet beach", "near the old stone bridge", "beside a narrow canal",
    "in the city park", "at the edge of a pine forest", "on a busy street corner", "in a sunny kitchen",
    "along the river bank", "in front of a small bakery", "on a snowy mountain trail",
    "inside a busy train station", "at the harbour", "in a field of tall grass", "outside the town hall",
    "on the steps of a museum", "in a narrow alley", "under a large oak tree", "on a wooden pier",
    "next to a flower stall",
)
TIMES = (
    "", "", "", " in the early morning", " at sunset", " during a light rain", " on a cold winter afternoon",
    " under a cloudy sky", " after the storm", " on a warm summer evening", " before the shops open",
)
THINGS = (
    ("wooden boat", "painted bright yellow"), ("old lighthouse", "white with a red roof"),
    ("market stall", "full of ripe oranges"), ("mountain cabin", "covered in fresh snow"),
    ("stone church", "surrounded by tall cypress trees"), ("red tram", "crowded with commuters"),
    ("garden path", "lined with purple lavender"), ("city square", "busy with street performers"),
    ("small harbour", "packed with fishing boats"), ("narrow street", "decorated with paper lanterns"),
    ("wheat field", "golden in the late afternoon light"), ("bookshop window", "filled with old maps"),
)
COUNTS = ("two", "three", "four", "five", "several", "a dozen")
PLURAL_THINGS = (
    "sailboats", "bicycles", "red umbrellas", "sleeping dogs", "wooden benches", "street lamps",
    "fishing boats", "market carts", "stone statues", "orange trees",
)
CONNECTORS = ("and then", "before she", "after that they", "and later")

# Sentences each text rule must drop.
# Grammatical, with an action and a relation (they pass the CAT rule), but made only of words that are
# rare in the corpus, so their information entropy (sum of -p log2 p over corpus word frequencies) is far
# below 0.3: the kind of jargon line (part numbers, product names) the paper's entropy rule removes.
LOW_ENTROPY_SENTENCES = (
    "Technicians calibrated Mirelda spectrometers using Qorvane firmware.",
    "Engineers bolted Tarvex hinges onto Quillmore cabinets.",
    "Zentrix installers mounted Kelvorn brackets beneath Dravish consoles.",
    "Brixwell couriers delivered Fyrnwald gaskets to Ostrava depots.",
)
EMOJI_SENTENCES = (
    "We loved every minute of the boat trip along the coast \U0001F600.",
    "The view from the top of the hill was simply amazing \U0001F304.",
    "Our dog had the best day ever at the beach \U0001F436.",
    "Nothing beats fresh bread from the corner bakery \U0001F35E.",
)
URL_SENTENCES = (
    "More photos of the summer festival are posted at https://www.example.com/gallery/summer every week.",
    "Visit www.example.org/tickets to book a guided walking tour of the old town.",
    "The full recipe for this fish soup is available at example.net/recipes/fish-soup for free.",
    "You can watch the recorded concert at http://video.example.com/watch?v=harbour2024 tonight.",
)
SHORT_SENTENCES = ("Beautiful view.", "Stunning!", "Thank you.", "So peaceful.", "Wow.")
# Site furniture that shows up verbatim on many pages: exact duplicates across documents.
BOILERPLATE_SENTENCES = (
    "Thank you for reading our weekly travel notes.",
    "All photographs on this page were taken by our own team of volunteers.",
    "Please share this story with friends who love the outdoors.",
    "Sign up for our newsletter to hear about the next walking tour.",
)
# Sentences in other languages (raw crawls are not English-filtered): the language rule drops them.
FOREIGN_SENTENCES = (
    "Die Fischer bringen jeden Morgen ihren Fang in den kleinen Hafen der Altstadt.",
    "Les enfants jouent au ballon sur la place devant la vieille église du village.",
    "游客们在古老的城墙上拍摄日落的照片。",
)
WINDOWS_1252_SENTENCES = (
    "The café near the harbour serves crème brûlée and strong espresso to tired fishermen.",
    "A naïve tourist from Zürich is photographing the façade of the old cathedral.",
    "At the Saturday market the señora sells jalapeños, sweet peppers and fresh herbs.",
    "The guide said \u201cwelcome to the old town\u201d and pointed at the château \u2014 built in 1742.",
)


class SentenceMaker:
    """Grammatical, varied English sentences describing scenes with actions."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def _subject_and_action(self) -> tuple[str, int, tuple[str, str]]:
        if self.rng.random() < 0.75:
            subject, number = self.rng.choice(PEOPLE)
            return subject, number, self.rng.choice(PEOPLE_ACTIONS)
        subject, number = self.rng.choice(ANIMALS)
        return subject, number, self.rng.choice(ANIMAL_ACTIONS)

    def _progressive(self) -> str:
        subject, number, (ing, _) = self._subject_and_action()
        be = "is" if number == 1 else "are"
        return f"{subject} {be} {ing} {self.rng.choice(PLACES)}{self.rng.choice(TIMES)}."

    def _fronted_place(self) -> str:
        subject, number, (ing, _) = self._subject_and_action()
        be = "is" if number == 1 else "are"
        place = self.rng.choice(PLACES)
        return f"{place[0].upper()}{place[1:]}, {_lower_first(subject)} {be} {ing}."

    def _two_actions(self) -> str:
        subject, _, (_, first) = self._subject_and_action()
        second = self.rng.choice(PEOPLE_ACTIONS if subject in dict(PEOPLE) else ANIMAL_ACTIONS)[1]
        return f"{subject} {first} {self.rng.choice(PLACES)} and then {second}."

    def _description(self) -> str:
        thing, quality = self.rng.choice(THINGS)
        return f"The {thing} {self.rng.choice(PLACES)} is {quality}."

    def _there_are(self) -> str:
        count, things = self.rng.choice(COUNTS), self.rng.choice(PLURAL_THINGS)
        return f"There are {count} {things} {self.rng.choice(PLACES)}{self.rng.choice(TIMES)}."

    def sentence(self) -> str:
        makers = (self._progressive, self._progressive, self._fronted_place, self._two_actions,
                  self._description, self._there_are)
        return self.rng.choice(makers)()

    def long_sentence(self, min_words: int = 90) -> str:
        """One run-on sentence of more than 81 words: clauses joined by commas, no inner full stop."""
        clauses = []
        while sum(len(c.split()) for c in clauses) < min_words:
            subject, number, (ing, _) = self._subject_and_action()
            be = "is" if number == 1 else "are"
            clauses.append(f"{_lower_first(subject)} {be} {ing} {self.rng.choice(PLACES)}")
        text = ", while ".join(clauses)
        return f"{text[0].upper()}{text[1:]}."


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if not text.startswith(("I ", "I'")) else text


# ---------------------------------------------------------------------------------------------------
# Images: gradients, shapes, noise and a caption, in JPEG or PNG
# ---------------------------------------------------------------------------------------------------

NORMAL, SMALL, WIDE, TALL, DUPLICATE, UNDECODABLE = "normal", "small", "wide", "tall", "duplicate", "undecodable"
NEAR_DUPLICATE = "near_duplicate"  # another image resized and re-encoded: new bytes, same picture
BLOCKED_HOST = "blocked_host"  # URL-only image: no bytes anywhere in the corpus
IMAGE_CASES = (SMALL, WIDE, TALL, DUPLICATE, NEAR_DUPLICATE, UNDECODABLE)


@dataclass
class ImageAsset:
    url: str
    data: bytes
    fmt: str          # "jpeg" | "png" | "garbage" | "url_only"
    case: str         # NORMAL or one of IMAGE_CASES
    width: int = 0
    height: int = 0
    alt: Optional[str] = None


class ImageMaker:
    """Draws distinct real images; which filter case an image hits follows a fixed schedule."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.made: list[ImageAsset] = []
        self._font = ImageFont.load_default(size=18)

    def _size_for(self, case: str) -> tuple[int, int]:
        rng = self.rng
        if case == SMALL:
            return rng.randint(40, 96), rng.randint(40, 120)
        if case == WIDE:
            height = rng.randint(100, 140)
            return height * rng.randint(4, 5), height
        if case == TALL:
            width = rng.randint(100, 130)
            return width, width * rng.randint(4, 5)
        return rng.randint(160, 420), rng.randint(140, 360)

    def _colour(self) -> tuple[int, int, int]:
        return tuple(self.rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]

    def draw(self, width: int, height: int) -> Image.Image:
        rng = self.rng
        gradient = Image.linear_gradient("L").rotate(rng.randint(0, 359)).resize((width, height))
        image = ImageOps.colorize(gradient, self._colour(), self._colour())
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 8)):
            x0, y0 = rng.randint(0, width - 1), rng.randint(0, height - 1)
            x1, y1 = x0 + rng.randint(5, max(6, width // 2)), y0 + rng.randint(5, max(6, height // 2))
            shape = rng.choice(("ellipse", "rectangle", "line"))
            if shape == "ellipse":
                draw.ellipse((x0, y0, x1, y1), fill=self._colour())
            elif shape == "rectangle":
                draw.rectangle((x0, y0, x1, y1), fill=self._colour(), outline=self._colour())
            else:
                draw.line((x0, y0, x1, y1), fill=self._colour(), width=rng.randint(1, 6))
        draw.text((8, 8), f"#{len(self.made)}", fill=(255, 255, 255), font=self._font)
        # sensor-like grain from our own generator (Image.effect_noise uses C rand(), not the seed)
        noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
        return Image.blend(image, noise, rng.uniform(0.04, 0.12))

    def encode(self, image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        if fmt == "jpeg":
            image.save(buffer, "JPEG", quality=82)
        else:
            image.save(buffer, "PNG", optimize=False)
        return buffer.getvalue()

    def _near_copy(self, url: str, original: ImageAsset, alt: Optional[str]) -> ImageAsset:
        """The original scaled to 80-90% and saved as a low-quality JPEG, as re-hosting sites do: the
        bytes differ (exact dedup misses it), the perceptual hash stays within a few bits."""
        with Image.open(io.BytesIO(original.data)) as image:
            scale = self.rng.uniform(0.8, 0.9)
            width, height = max(100, round(image.width * scale)), max(100, round(image.height * scale))
            buffer = io.BytesIO()
            image.convert("RGB").resize((width, height), Image.LANCZOS).save(buffer, "JPEG", quality=45)
        return ImageAsset(url, buffer.getvalue(), "jpeg", NEAR_DUPLICATE, width, height, alt)

    def make(self, url: str, case: str = NORMAL, alt: Optional[str] = None) -> ImageAsset:
        if case == DUPLICATE:
            original = self.rng.choice([a for a in self.made if a.case == NORMAL])
            asset = ImageAsset(url, original.data, original.fmt, DUPLICATE, original.width, original.height, alt)
        elif case == NEAR_DUPLICATE:
            asset = self._near_copy(url, self.rng.choice([a for a in self.made if a.case == NORMAL]), alt)
        elif case == UNDECODABLE:
            asset = ImageAsset(url, self.rng.randbytes(self.rng.randint(600, 3000)), "garbage", UNDECODABLE, alt=alt)
        else:
            width, height = self._size_for(case)
            fmt = "png" if url.endswith(".png") else "jpeg"
            asset = ImageAsset(url, self.encode(self.draw(width, height), fmt), fmt, case, width, height, alt)
        self.made.append(asset)
        return asset


def image_case_for(index: int) -> str:
    """Which filter an image exercises, by its running index over the whole corpus."""
    if index < 3:
        return NORMAL  # duplicates need some originals first
    for case, (modulus, remainder) in (
        (UNDECODABLE, (61, 30)), (SMALL, (23, 5)), (WIDE, (29, 7)), (TALL, (31, 9)), (DUPLICATE, (19, 3)),
        (NEAR_DUPLICATE, (17, 12)),
    ):
        if index % modulus == remainder:
            return case
    return NORMAL


# ---------------------------------------------------------------------------------------------------
# A source-independent document plan, then one writer per source kind
# ---------------------------------------------------------------------------------------------------

Block = Union[str, ImageAsset]  # a paragraph, or an image


@dataclass
class DocPlan:
    title: str
    url: str
    blocks: list[Block]
    sentences: list[str] = field(default_factory=list)  # every sentence of the paragraphs, in order

    @property
    def images(self) -> list[ImageAsset]:
        return [b for b in self.blocks if isinstance(b, ImageAsset)]


@dataclass
class Ledger:
    """What was written, for the summary returned to the caller."""
    documents: Counter = field(default_factory=Counter)
    image_occurrences: Counter = field(default_factory=Counter)
    image_cases: Counter = field(default_factory=Counter)
    image_formats: Counter = field(default_factory=Counter)
    sentence_cases: Counter = field(default_factory=Counter)
    sentences: list[str] = field(default_factory=list)
    headings: int = 0
    files: list[str] = field(default_factory=list)

    def record(self, source: str, plans: list[DocPlan], headings: int = 0) -> None:
        """Count one written document made of one or more plans (a PDF has one plan per section)."""
        self.documents[source] += 1
        self.headings += headings
        for plan in plans:
            self.sentences.extend(plan.sentences)
            for image in plan.images:
                self.image_occurrences[source] += 1
                self.image_cases[image.case] += 1
                self.image_formats[image.fmt] += 1


class CorpusBuilder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.words = SentenceMaker(self.rng)
        self.images = ImageMaker(self.rng)
        self.ledger = Ledger()
        self._image_index = 0
        self._doc_index = 0

    def _special_sentences(self, doc_index: int, emoji_ok: bool) -> list[tuple[str, str]]:
        """(case, sentence) pairs this document carries, on a fixed schedule so every case appears."""
        rng, specials = self.rng, []
        if doc_index % 7 == 0 and emoji_ok:
            specials.append(("emoji", rng.choice(EMOJI_SENTENCES)))
        if doc_index % 6 == 1:
            specials.append(("url", rng.choice(URL_SENTENCES)))
        if doc_index % 4 == 2:
            specials.append(("short", rng.choice(SHORT_SENTENCES)))
        if doc_index % 9 == 3:
            specials.append(("long", self.words.long_sentence()))
        if doc_index % 3 == 0:
            specials.append(("boilerplate", rng.choice(BOILERPLATE_SENTENCES)))
        if doc_index % 8 == 5:
            specials.append(("low_entropy", LOW_ENTROPY_SENTENCES[(doc_index // 8) % len(LOW_ENTROPY_SENTENCES)]))
        return specials

    def _paragraphs(self, count: int, doc_index: int, emoji_ok: bool, extra: tuple[str, ...]) -> list[list[str]]:
        rng = self.rng
        paragraphs = [[self.words.sentence() for _ in range(rng.randint(*SENTENCES_PER_PARAGRAPH))]
                      for _ in range(count)]
        for case, sentence in self._special_sentences(doc_index, emoji_ok):
            self.ledger.sentence_cases[case] += 1
            paragraph = rng.choice(paragraphs)
            paragraph.insert(rng.randint(0, len(paragraph)), sentence)
        if extra:
            paragraphs.insert(1, list(extra))
        return paragraphs

    def _next_image(self, url: str, allow_undecodable: bool) -> ImageAsset:
        case = image_case_for(self._image_index)
        self._image_index += 1
        if case == UNDECODABLE and not allow_undecodable:
            case = NORMAL
        alt = f"photo {self.rng.choice(PLACES)}"
        return self.images.make(url, case, alt)

    def plan(self, url: str, image_url_for: Callable[[int], str], paragraphs: tuple[int, int] = PARAGRAPHS_PER_DOC,
             images: tuple[int, int] = IMAGES_PER_DOC, allow_undecodable: bool = True, emoji_ok: bool = True,
             extra: tuple[str, ...] = ()) -> DocPlan:
        """Paragraphs and images interleaved at random, never starting with an image."""
        doc_index = self._doc_index
        self._doc_index += 1
        texts = self._paragraphs(self.rng.randint(*paragraphs), doc_index, emoji_ok, extra)
        n_images = self.rng.randint(*images)
        total = len(texts) + n_images
        image_slots = set(self.rng.sample(range(1, total), n_images))
        remaining_texts = iter(texts)
        blocks: list[Block] = [
            self._next_image(image_url_for(self._image_index), allow_undecodable) if position in image_slots
            else " ".join(next(remaining_texts))
            for position in range(total)
        ]
        title = f"{self.rng.choice(THINGS)[0].capitalize()} {self.rng.choice(PLACES)}"
        return DocPlan(title=title, url=url, blocks=blocks, sentences=[s for p in texts for s in p])


# ---------------------------------------------------------------------------------------------------
# HTML rendering (used for WARC pages and plain files)
# ---------------------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _src_form(image_url: str, page_url: str, variant: int) -> str:
    """The same absolute URL written the ways real pages write it, so the parser must resolve them."""
    image, page = urlsplit(image_url), urlsplit(page_url)
    if image.netloc != page.netloc or variant % 4 == 0:
        return image_url
    if variant % 4 == 1:
        return image.path                              # root-relative
    if variant % 4 == 2:
        return f"//{image.netloc}{image.path}"         # protocol-relative
    page_dir = page.path.rsplit("/", 1)[0] + "/"
    if image.path.startswith(page_dir):
        return image.path[len(page_dir):]             # document-relative
    return image.path


def render_html(plan: DocPlan, charset: Optional[str] = "utf-8", tracking_pixel: bool = False) -> str:
    site = urlsplit(plan.url).netloc
    meta = f'<meta charset="{charset}">' if charset else ""
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head>{meta}<title>{_escape(plan.title)}</title></head><body>',
        '<header><nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/contact">Contact</a></nav></header>',
        f"<main><article><h1>{_escape(plan.title)}</h1>",
    ]
    for index, block in enumerate(plan.blocks):
        if isinstance(block, str):
            parts.append(f"<p>{_escape(block)}</p>")
        else:
            src = _src_form(block.url, plan.url, index)
            size = f' width="{block.width}" height="{block.height}"' if block.width else ""
            parts.append(f'<img src="{_escape(src)}" alt="{_escape(block.alt or "")}"{size}>')
    parts.append("</article></main>")
    parts.append(f"<footer><p>Copyright 2024 {site}. All rights reserved.</p></footer>")
    if tracking_pixel:
        parts.append('<img src="https://stats.example.net/collect/pixel.gif?p=1" width="1" height="1" alt="">')
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------
# WARC
# ---------------------------------------------------------------------------------------------------

def _record_id(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def _warc_record_bytes(rng: random.Random, uri: str, body: bytes, content_type: str,
                       status: str = "200 OK", extra_headers: tuple = ()) -> bytes:
    """One uncompressed WARC response record with fixed date and ID (warcio would use now/uuid4)."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=False)
    http_headers = StatusAndHeaders(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers],
        protocol="HTTP/1.1",
    )
    record = writer.create_warc_record(
        uri, "response", payload=io.BytesIO(body), http_headers=http_headers,
        warc_headers_dict={"WARC-Date": FIXED_WARC_DATE, "WARC-Record-ID": _record_id(rng)},
    )
    writer.write_record(record)
    return buffer.getvalue()


def _warcinfo_bytes(rng: random.Random, filename: str) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=False)
    payload = b"software: realsyn-spark sample_corpus\r\nformat: WARC File Format 1.1\r\n"
    record = writer.create_warc_record(
        filename, "warcinfo", payload=io.BytesIO(payload), warc_content_type="application/warc-fields",
        warc_headers_dict={"WARC-Date": FIXED_WARC_DATE, "WARC-Record-ID": _record_id(rng), "WARC-Filename": filename},
    )
    writer.write_record(record)
    return buffer.getvalue()


def _gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _image_content_type(asset: ImageAsset) -> str:
    return "image/png" if asset.url.endswith(".png") else "image/jpeg"


def _page_members(builder: CorpusBuilder, plan: DocPlan, body: bytes, content_type: str) -> list[bytes]:
    """The page's response record followed by one record per image it shows, each its own gzip member."""
    members = [_gzip_member(_warc_record_bytes(builder.rng, plan.url, body, content_type))]
    for asset in plan.images:
        members.append(_gzip_member(_warc_record_bytes(builder.rng, asset.url, asset.data, _image_content_type(asset))))
    return members


def _warc_plan(builder: CorpusBuilder, site_index: int, page_index: int, extra: tuple[str, ...] = ()) -> DocPlan:
    site = SITES[site_index % len(SITES)]
    section = ("stories", "travel", "photos", "daily")[page_index % 4]

    def image_url(n: int) -> str:
        return f"{site}/{section}/images/img{n:05d}.{'png' if n % 3 == 0 else 'jpg'}"

    return builder.plan(f"{site}/{section}/page-{page_index:04d}.html", image_url, extra=extra)


def write_sample_warc(builder: CorpusBuilder, path: str, pages: int) -> None:
    members = [_gzip_member(_warcinfo_bytes(builder.rng, os.path.basename(path)))]
    for page_index in range(pages):
        windows_1252 = page_index == 2
        foreign = page_index == 1
        extra = WINDOWS_1252_SENTENCES if windows_1252 else FOREIGN_SENTENCES if foreign else ()
        plan = _warc_plan(builder, page_index, page_index, extra=extra)
        if foreign:
            builder.ledger.sentence_cases["foreign_language"] += len(FOREIGN_SENTENCES)
        if windows_1252:
            # declared only in the HTTP header: the parser has to honour Content-Type's charset
            body = render_html(plan, charset=None).encode("cp1252")
            content_type = "text/html; charset=windows-1252"
            builder.ledger.sentence_cases["windows_1252"] += len(WINDOWS_1252_SENTENCES)
        else:
            body = render_html(plan, tracking_pixel=page_index % 5 == 0).encode("utf-8")
            content_type = "text/html; charset=utf-8"
        members.extend(_page_members(builder, plan, body, content_type))
        builder.ledger.record("warc", [plan], headings=1)
        if page_index == 4:  # a moved page: crawlers store the redirect, which carries no content
            redirect = _warc_record_bytes(builder.rng, f"{SITES[0]}/old/page.html", b"", "text/html",
                                          status="301 Moved Permanently", extra_headers=(("Location", plan.url),))
            members.append(_gzip_member(redirect))
    _write(builder, path, b"".join(members))


def _corrupted(member: bytes) -> bytes:
    """A gzip member whose deflate data is overwritten in the middle: it no longer inflates."""
    damaged = bytearray(member)
    middle = len(damaged) // 2
    damaged[middle - 16: middle + 16] = b"\xff" * 32
    return bytes(damaged)


def write_broken_warc(builder: CorpusBuilder, path: str) -> None:
    """Good pages, a corrupt gzip member, one more good page, then a member cut short (end of file)."""
    members = [_gzip_member(_warcinfo_bytes(builder.rng, os.path.basename(path)))]
    for page_index in range(BROKEN_WARC_GOOD_PAGES):
        if page_index == BROKEN_WARC_GOOD_PAGES - 1:
            lost = _warc_record_bytes(builder.rng, f"{SITES[1]}/lost/corrupt.html", b"<p>lost</p>" * 40, "text/html")
            members.append(_corrupted(_gzip_member(lost)))
        plan = _warc_plan(builder, page_index + 1, 9000 + page_index)
        members.extend(_page_members(builder, plan, render_html(plan).encode("utf-8"), "text/html; charset=utf-8"))
        builder.ledger.record("warc_broken", [plan], headings=1)
    cut = _gzip_member(_warc_record_bytes(builder.rng, f"{SITES[1]}/lost/truncated.html", b"<p>cut</p>" * 40, "text/html"))
    members.append(cut[: len(cut) * 3 // 5])
    _write(builder, path, b"".join(members))


# ---------------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------------

PDF_PAGE_WIDTH, PDF_PAGE_HEIGHT, PDF_MARGIN = 595, 842, 56
PDF_FONT_SIZE = 11
PDF_IMAGE_MAX_HEIGHT = 160
PDF_GAP = 10


class _PdfLayout:
    """Stacks blocks down the page, starting a new page when one does not fit."""

    def __init__(self, document):
        self.document = document
        self.page = None
        self.y = PDF_PAGE_HEIGHT  # forces a page on first use

    def new_page(self) -> None:
        self.page = self.document.new_page(width=PDF_PAGE_WIDTH, height=PDF_PAGE_HEIGHT)
        self.y = PDF_MARGIN

    def add_paragraph(self, text: str) -> None:
        for _ in range(2):  # the second try is on a fresh page
            box = pymupdf.Rect(PDF_MARGIN, self.y, PDF_PAGE_WIDTH - PDF_MARGIN, PDF_PAGE_HEIGHT - PDF_MARGIN)
            left_over = self.page.insert_textbox(box, text, fontsize=PDF_FONT_SIZE, fontname="helv")
            if left_over >= 0:  # negative means it did not fit and nothing was written
                self.y += box.height - left_over + PDF_GAP
                return
            self.new_page()
        raise ValueError("paragraph longer than a PDF page")

    def add_image(self, asset: ImageAsset) -> None:
        width_limit = PDF_PAGE_WIDTH - 2 * PDF_MARGIN
        scale = min(1.0, PDF_IMAGE_MAX_HEIGHT / asset.height, width_limit / asset.width)
        height = asset.height * scale
        if self.y + height > PDF_PAGE_HEIGHT - PDF_MARGIN:
            self.new_page()
        rect = pymupdf.Rect(PDF_MARGIN, self.y, PDF_MARGIN + asset.width * scale, self.y + height)
        self.page.insert_image(rect, stream=asset.data)
        self.y = rect.y1 + PDF_GAP


def _pdf_bytes(plans: list[DocPlan], title: str) -> bytes:
    """One section per plan, each starting on a new page; fixed metadata and ID for reproducibility."""
    document = pymupdf.open()
    layout = _PdfLayout(document)
    for plan in plans:
        layout.new_page()
        for block in plan.blocks:
            if isinstance(block, str):
                layout.add_paragraph(block)
            else:
                layout.add_image(block)
    document.set_metadata({
        "title": title, "author": "realsyn-spark sample corpus", "creator": "realsyn_spark.sample_corpus",
        "producer": "PyMuPDF", "creationDate": FIXED_PDF_DATE, "modDate": FIXED_PDF_DATE,
    })
    data = document.tobytes(garbage=3, deflate=True, no_new_id=True)
    document.close()
    return data


def _pdf_plans(builder: CorpusBuilder, stem: str, sections: int) -> list[DocPlan]:
    site = "https://reports.example.com"
    return [
        builder.plan(f"{site}/{stem}.pdf", lambda n: f"{site}/{stem}/img{n:05d}.jpg", paragraphs=(2, 3),
                     images=(1, 2), allow_undecodable=False, emoji_ok=False)  # base-14 fonts have no emoji
        for _ in range(sections)
    ]


def write_pdf(builder: CorpusBuilder, path: str, sections: int, stem: str) -> None:
    plans = _pdf_plans(builder, stem, sections)
    _write(builder, path, _pdf_bytes(plans, title=f"Field notes: {stem.replace('-', ' ')}"))
    builder.ledger.record("pdf", plans)


def write_truncated_pdf(builder: CorpusBuilder, path: str) -> None:
    """A three-section PDF cut in half, as a failed download leaves it. Not counted as a document."""
    scratch = CorpusBuilder(builder.rng.randint(0, 2**31))  # its content stays out of the ledger
    data = _pdf_bytes(_pdf_plans(scratch, "truncated", 3), title="Truncated report")
    _write(builder, path, data[: len(data) // 2])


# ---------------------------------------------------------------------------------------------------
# OBELICS JSONL
# ---------------------------------------------------------------------------------------------------

def _node_metadata(asset: ImageAsset, page_url: str) -> dict:
    """Per-image metadata as OBELICS stores it."""
    return {
        "document_url": page_url, "unformatted_src": asset.url, "src": asset.url,
        "formatted_filename": asset.url.rsplit("/", 1)[-1], "alt_text": asset.alt or "",
        "original_width": asset.width or None, "original_height": asset.height or None,
    }


def _obelics_record(plan: DocPlan, row: int, drop_first_image_url: bool) -> dict:
    texts, images, image_bytes, node_metadata = [], [], [], []
    first_image = True
    for block in plan.blocks:
        if isinstance(block, str):
            texts.append(block)
            images.append(None)
            image_bytes.append(None)
            node_metadata.append(None)
            continue
        url_only = block.case == BLOCKED_HOST
        texts.append(None)
        # one image travels with its bytes only: the parser names it inline://<hash>
        images.append(None if drop_first_image_url and first_image else block.url)
        image_bytes.append(None if url_only else base64.b64encode(block.data).decode("ascii"))
        node_metadata.append(_node_metadata(block, plan.url))
        first_image = False
    general = {
        "url": plan.url, "warc_filename": "crawl-data/CC-MAIN-2024-10/segments/sample/warc/sample.warc.gz",
        "warc_record_offset": 1000 * row, "warc_record_length": 900 + row,
    }
    return {
        "images": images, "texts": texts, "image_bytes": image_bytes,
        "metadata": json.dumps(node_metadata), "general_metadata": json.dumps(general),
    }


def _add_blocked_image(plan: DocPlan, index: int) -> None:
    """A URL-only image on a host the fetcher must refuse, in the middle of the record."""
    url = BLOCKED_IMAGE_URLS[(index // 5) % len(BLOCKED_IMAGE_URLS)]
    plan.blocks.insert(len(plan.blocks) // 2, ImageAsset(url, b"", "url_only", BLOCKED_HOST, alt="blocked"))


def write_obelics_jsonl(builder: CorpusBuilder, path: str, records: int) -> None:
    lines: list[str] = []
    site, cdn = "https://www.example-magazine.org", "https://cdn.example-magazine.org"
    for index in range(records):
        if len(lines) == OBELICS_MALFORMED_LINE:
            lines.append('{"texts": ["This record was cut off while being written", null], "images": [null, "http://ex')
        plan = builder.plan(f"{site}/articles/{index:05d}", lambda n: f"{cdn}/i/{n:05d}.jpg")
        if index % 5 == 0:
            _add_blocked_image(plan, index)
        record = _obelics_record(plan, len(lines), drop_first_image_url=index == 3)
        lines.append(json.dumps(record, ensure_ascii=False))
        builder.ledger.record("obelics", [plan])
    _write(builder, path, ("\n".join(lines) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# Plain HTML files (images next to them, so a local web server can serve both)
# ---------------------------------------------------------------------------------------------------

def write_html_files(builder: CorpusBuilder, html_dir: str, files: int) -> None:
    base = "http://localhost"
    for index in range(files):
        name = f"page{index + 1}.html"
        plan = builder.plan(f"{base}/{name}", lambda n: f"{base}/images/img{n:05d}.{'png' if n % 2 else 'jpg'}")
        # relative and root-relative links: both resolve to http://localhost/images/... from the page URL
        _write(builder, os.path.join(html_dir, name), render_html(plan, tracking_pixel=index == 0).encode("utf-8"))
        for asset in plan.images:
            _write(builder, os.path.join(html_dir, "images", asset.url.rsplit("/", 1)[-1]), asset.data)
        builder.ledger.record("html", [plan], headings=1)


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------

def _write(builder: CorpusBuilder, path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    builder.ledger.files.append(path)


def _summary(builder: CorpusBuilder, out_dir: str, seed: int, scale: int) -> dict:
    ledger = builder.ledger
    sentences = ledger.sentences
    occurrences = Counter(sentences)
    return {
        "seed": seed,
        "scale": scale,
        "files": sorted(os.path.relpath(p, out_dir) for p in ledger.files),
        "documents": {**dict(ledger.documents), "total": sum(ledger.documents.values())},
        "image_occurrences": {**dict(ledger.image_occurrences), "total": sum(ledger.image_occurrences.values())},
        "image_cases": {case: ledger.image_cases.get(case, 0) for case in (NORMAL, *IMAGE_CASES, BLOCKED_HOST)},
        "image_formats": dict(ledger.image_formats),
        "headings": ledger.headings,
        "sentences": {
            "total": len(sentences),
            "distinct": len(occurrences),
            "repeated_occurrences": sum(n - 1 for n in occurrences.values()),
            **{case: ledger.sentence_cases.get(case, 0)
               for case in ("emoji", "url", "short", "long", "boilerplate", "low_entropy", "windows_1252",
                            "foreign_language")},
        },
        "damaged": {
            "warc/broken.warc.gz": {"good_pages": BROKEN_WARC_GOOD_PAGES, "bad_members": 2},
            "pdf/truncated.pdf": {"cut_at": "half"},
            "obelics/sample.jsonl": {"malformed_lines": [OBELICS_MALFORMED_LINE]},
        },
    }


def generate_sample_corpus(out_dir: str, seed: int = 0, scale: int = 1) -> dict:
    """Write the sample corpus under out_dir; returns a summary of what was written.

    Documents scale with `scale` (about 60 at scale 1); the damaged files are written once.
    Documents in `documents` are the ones a parser should recover (the broken WARC's good pages
    count as "warc_broken"; the truncated PDF is listed under "damaged" only).
    """
    if scale < 1:
        raise ValueError("scale must be >= 1")
    builder = CorpusBuilder(seed)
    write_sample_warc(builder, os.path.join(out_dir, "warc", "sample.warc.gz"), WARC_PAGES * scale)
    write_broken_warc(builder, os.path.join(out_dir, "warc", "broken.warc.gz"))
    for copy in range(scale):
        stem = "sample" if copy == 0 else f"sample-{copy + 1}"
        write_pdf(builder, os.path.join(out_dir, "pdf", f"{stem}.pdf"), PDF_SECTIONS, stem)
    write_truncated_pdf(builder, os.path.join(out_dir, "pdf", "truncated.pdf"))
    write_obelics_jsonl(builder, os.path.join(out_dir, "obelics", "sample.jsonl"), OBELICS_RECORDS * scale)
    write_html_files(builder, os.path.join(out_dir, "html"), HTML_FILES * scale)
    return _summary(builder, out_dir, seed, scale)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the realsyn-spark sample corpus.")
    parser.add_argument("out_dir")
    parser.add_argument("--scale", type=int, default=1, help="multiplies the number of documents")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = generate_sample_corpus(args.out_dir, seed=args.seed, scale=args.scale)
    summary = {key: value for key, value in summary.items() if key != "files"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
