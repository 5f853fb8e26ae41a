"""End to end in headless Chromium: a person opens the gallery, rates samples with the keyboard only, and
the ratings land in the feedback landing zone; then the dashboard shows its plots.

Uses Debian's Chromium (/usr/bin/chromium; `apt-get install chromium`) through the playwright package,
never a browser that playwright downloads. With GEN_ASSETS_SCREENSHOTS=1 it also writes the README's
screenshots, docs/review_gallery.png and docs/review_dashboard.png.
"""

import pytest

from gen_assets.settings import Paths
from gen_assets.web.app import create_app
from gen_assets_tests.web.conftest import NEEDS_CHROMIUM, incoming_rows, live_server, screenshot, test_config

pytestmark = NEEDS_CHROMIUM


@pytest.fixture
def browser_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # its own cookies
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def focused_sample(page) -> str:
    return page.evaluate("document.activeElement.closest('.card').dataset.sample")


def test_a_person_rates_with_the_keyboard_and_the_ratings_land(home, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    app = create_app(Paths(home), test_config(page_size=12))
    with live_server(app) as url:
        page.goto(url + "/gallery?modality=image")
        page.wait_for_function("document.activeElement && document.activeElement.classList.contains('card')")
        first = focused_sample(page)
        page.keyboard.press("j")  # the next sample
        second = focused_sample(page)
        assert second != first
        page.keyboard.press("c")  # write a comment ...
        page.keyboard.type("crisp strokes")
        page.keyboard.press("Escape")  # ... back to the card ...
        page.keyboard.press("4")  # ... and rate it 4
        expect(page.locator(f"#card-{second} .result")).to_have_text("Rated 4. Thank you.")
        assert focused_sample(page) != second  # focus moved on to the next sample
        third = focused_sample(page)
        page.keyboard.press("u")  # thumbs up
        expect(page.locator(f"#card-{third} .result")).to_have_text("Rated 5. Thank you.")
        page.keyboard.press("k")
        page.keyboard.press("k")  # back to the second: rate it again, with the comment box and Enter
        assert focused_sample(page) == second
        page.keyboard.press("2")
        expect(page.locator(f"#card-{second} .result")).to_have_text("Rated 2. Thank you.")
        expect(page.locator("#waiting-count")).to_have_text("3")

        rows = incoming_rows(home)
        assert sorted((r["sample_id"], r["rating"], r.get("comment")) for r in rows) == sorted(
            [(second, 4, "crisp strokes"), (third, 5, None), (second, 2, None)])
        assert all(r["user_id"].startswith("web-") for r in rows)

        page.evaluate("document.querySelector('details.keys').open = true")  # the shortcuts, for the picture
        screenshot(page, "review_gallery.png")
        page.reload()  # the header counts what waits in the landing zone
        expect(page.locator("#waiting-count")).to_have_text("3")

        page.goto(url + "/dashboard")
        plots = page.locator(".plot img")
        expect(plots).to_have_count(2)
        page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("text=retrain_job").count() == 1
        screenshot(page, "review_dashboard.png", full_page=True)
    assert errors == []


def test_the_comment_box_sends_with_enter(home, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    app = create_app(Paths(home), test_config())
    with live_server(app) as url:
        page.goto(url + "/gallery?modality=text")
        page.wait_for_function("document.activeElement && document.activeElement.classList.contains('card')")
        sample = focused_sample(page)
        page.keyboard.press("c")
        page.keyboard.type("needs a rhyme")
        page.keyboard.press("Enter")  # no rating chosen yet: it asks for one, nothing is sent
        expect(page.locator(f"#card-{sample} .result")).to_contain_text("Choose a rating first")
        page.keyboard.press("Escape")
        page.keyboard.press("Tab")  # into the card's rating scale (native radios)
        page.keyboard.press("ArrowRight")  # 1 -> 2
        page.keyboard.press("ArrowRight")  # 2 -> 3
        page.keyboard.press("c")
        page.keyboard.press("Enter")
        expect(page.locator(f"#card-{sample} .result")).to_have_text("Rated 3. Thank you.")
    assert [(r["sample_id"], r["rating"], r["comment"]) for r in incoming_rows(home)] == [(sample, 3, "needs a rhyme")]

