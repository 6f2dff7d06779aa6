"""fetch_many on what a server sends (local server, no network): image formats sniffed from the bytes,
not the Content-Type; truncated, empty and bomb payloads refused; bodies over max_bytes refused however
they are framed.
"""
from __future__ import annotations

import time

import pytest

from realsyn_spark.fetcher import fetch_many
from tests.fetcher_harness import (JPEG, PNG, cfg, fetch_one)


# -- good images and content sniffing -------------------------------------------------------------------

def test_good_jpeg_and_png(base):
    jpeg, png = fetch_many([f"{base}/good.jpg", f"{base}/good.png"], cfg())
    assert (jpeg.status, jpeg.http_status, jpeg.data, jpeg.attempts) == ("ok", 200, JPEG, 1)
    assert (jpeg.image.width, jpeg.image.height, jpeg.image.format) == (50, 40, "JPEG")
    assert jpeg.final_url == f"{base}/good.jpg" and jpeg.error is None
    assert (png.status, png.data, png.image.format, png.content_type) == ("ok", PNG, "PNG", "image/png")


def test_content_type_is_ignored_in_favour_of_magic_bytes(base):
    png, html = fetch_many([f"{base}/png-as-html", f"{base}/html-as-jpeg"], cfg())
    assert (png.status, png.content_type, png.image.format) == ("ok", "text/html", "PNG")
    assert (html.status, html.data) == ("not_an_image", None)


def test_empty_body_is_not_an_image(base):
    assert fetch_one(f"{base}/empty").status == "not_an_image"


def test_truncated_jpeg_is_decode_error(base):
    result = fetch_one(f"{base}/truncated.jpg")
    assert (result.status, result.data) == ("decode_error", None)
    assert "truncated" in result.error


def test_decompression_bomb_refused_as_too_large_without_decoding(base):
    start = time.perf_counter()
    result = fetch_one(f"{base}/bomb.png")
    assert time.perf_counter() - start < 3.0  # decoding 400 M pixels would take far longer
    assert (result.status, result.data) == ("too_large", None)
    assert result.image.status == "too_many_pixels" and "pixels" in result.error


def test_exif_rotation_reported_in_dimensions(base):
    result = fetch_one(f"{base}/exif.jpg")
    assert result.status == "ok"
    assert (result.image.width, result.image.height) == (30, 60)


# -- size limits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["big-cl", "big-close", "big-chunked"])
def test_oversized_body_is_too_large(base, route):
    result = fetch_one(f"{base}/{route}")
    assert (result.status, result.data, result.http_status) == ("too_large", None, 200)
    assert "max_bytes" in result.error


def test_content_length_refused_before_reading(base):
    assert "Content-Length" in fetch_one(f"{base}/big-cl").error
