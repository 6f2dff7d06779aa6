"""Issue 10 (HTML images): lazy-loaded images resolve to their real URL, on both extraction paths
(trafilatura's main content and the short-page walker); navigation images and icons are dropped and
counted."""
from __future__ import annotations

import pytest

from realsyn_spark.sources.htmlextract import extract_html

PAGE = "https://www.example.org/news/2024/harbour.html"
GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
PARAGRAPH = ("The fishermen of the old harbour mend their nets every morning before the boats leave, and "
             "the children watch them from the wall while the gulls wait for scraps. ")

# (img markup, the URL the page really shows)
LAZY = [
    (f'<img src="{GIF}" data-src="/media/boat.jpg" alt="boat">', "https://www.example.org/media/boat.jpg"),
    ('<img src="/static/lazy_placeholder.gif" data-lazy-src="nets.jpg" alt="nets">',
     "https://www.example.org/news/2024/nets.jpg"),
    ('<img src="/img/1x1.gif" data-original="//cdn.example.net/pier.jpg" alt="pier">', "https://cdn.example.net/pier.jpg"),
    ('<img src="" data-srcset="gull-320.jpg 320w, gull-1280.jpg 1280w, gull-640.jpg 640w" alt="gull">',
     "https://www.example.org/news/2024/gull-1280.jpg"),
    ('<img srcset="wall.jpg, wall@2x.jpg 2x, wall@3x.jpg 3x" alt="wall">',
     "https://www.example.org/news/2024/wall@3x.jpg"),
    ('<picture><source srcset="sea-800.webp 800w, sea-1600.webp 1600w" type="image/webp">'
     f'<img src="{GIF}" alt="sea"></picture>', "https://www.example.org/news/2024/sea-1600.webp"),
    ('<img data-src="net-a.jpg 480w, net-b.jpg 960w" src="/loading.gif" alt="net">',
     "https://www.example.org/news/2024/net-b.jpg"),
]


def _images(html: str, url: str = PAGE) -> tuple[list[str], int]:
    result = extract_html(html.encode("utf-8"), url)
    return [n.image_url for n in result.nodes if n.kind == "image"], getattr(result, "images_dropped", 0)


def test_srcset_parsing_picks_the_largest_candidate():
    from realsyn_spark.sources.htmlextract import largest_candidate, srcset_candidates

    assert srcset_candidates("a.jpg 320w,b.jpg 480w") == [("a.jpg", 320.0, "w"), ("b.jpg", 480.0, "w")]
    assert largest_candidate("x.jpg, y.jpg 2x, https://c.example/w_300,h_200/z.jpg 1.5x") == "y.jpg"
    assert largest_candidate("https://c.example/w_300,h_200/z.jpg 300w, q.jpg 200w") == "https://c.example/w_300,h_200/z.jpg"


@pytest.mark.parametrize("markup, expected", LAZY)
def test_lazy_image_on_the_main_content_path(markup, expected):
    html = (f"<html><body><article><h1>Harbour life</h1><p>{PARAGRAPH * 3}</p>{markup}"
            f"<p>{PARAGRAPH * 2}</p></article></body></html>")
    images, _ = _images(html)
    assert images == [expected]


@pytest.mark.parametrize("markup, expected", LAZY)
def test_lazy_image_on_the_short_page_walker_path(markup, expected):
    images, _ = _images(f"<html><body><div><p>Our boat.</p>{markup}</div></body></html>")
    assert images == [expected]


def test_lazy_image_resolves_against_base_and_never_carries_descriptors():
    html = (f'<html><head><base href="https://cdn.example.com/assets/"></head><body><article><p>{PARAGRAPH * 3}</p>'
            f'<img src="{GIF}" data-srcset="big.jpg 2000w, small.jpg 200w"><img srcset="one.jpg 1x">'
            f'<img src="/placeholder.png"></article></body></html>')
    images, _ = _images(html)
    assert images == ["https://cdn.example.com/assets/big.jpg", "https://cdn.example.com/assets/one.jpg"]
    assert not any(" " in url for url in images)


MENU_PAGE = f"""<html><body>
<header><a href="/"><img src="/brand/site.png" alt="Harbour Times"></a>
<img src="/banners/top-banner.jpg" alt="Summer sale"></header>
<nav><a class="menu-toggle"><img src="/ui/menu.png" alt="Menu"></a><img src="/nav/teaser-boats.jpg"></nav>
<main><article><header><h1>Harbour life</h1><img src="/photos/lead-harbour.jpg" alt="The harbour at dawn"></header>
<p>{PARAGRAPH * 3}</p>
<img src="/photos/nets.jpg" alt="Nets drying in the sun">
<p>{PARAGRAPH * 2}</p>
<a class="share-button" href="#"><img src="/ui/share.png" alt="Share"></a>
<img src="/ui/arrow-right.png" alt="next"><img src="/ui/x.png" width="24" height="24">
<img src="/icons/facebook.png" alt="Facebook">
<p>{PARAGRAPH}</p></article>
<aside><img src="/ads/teaser-ferry.jpg" alt="Ferry times"></aside></main>
<footer><img src="/social/twitter-logo.png" alt="Follow us"></footer>
</body></html>"""


def test_navigation_images_and_icons_are_dropped_and_counted():
    images, dropped = _images(MENU_PAGE)
    assert images == ["https://www.example.org/photos/lead-harbour.jpg", "https://www.example.org/photos/nets.jpg"]
    assert dropped >= 4   # the icons inside the article, which the main-content extractor keeps


def test_a_described_photo_that_names_a_brand_is_not_an_icon():
    html = (f"<html><body><article><p>{PARAGRAPH * 3}</p>"
            '<img src="/photos/hq.jpg" alt="The Facebook office seen from the harbour at dusk">'
            f"<p>{PARAGRAPH}</p></article></body></html>")
    assert _images(html) == (["https://www.example.org/photos/hq.jpg"], 0)
