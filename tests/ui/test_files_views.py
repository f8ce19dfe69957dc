"""The Files section, the image panels, the histogram heatmaps and the compare view's
image panel, in real headless Chromium against a real `mldash ui`."""

from __future__ import annotations

import os

import numpy as np
import pytest

import mldash

from _ui_support import HOSTILE, UiServer, canvas_ink, screenshot, watched_page

pytest.importorskip("playwright.sync_api")
if not os.path.exists("/usr/bin/chromium"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HTML = b"<html><body><script>alert('html ran')</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'svg ran\')"><script>alert("svg")</script></svg>'


def shade(value: int, size=(12, 16)) -> np.ndarray:
    pixels = np.zeros((*size, 3), np.uint8)
    pixels[...] = (value, 255 - value, 60)
    return pixels


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui-files-views"))
    with mldash.Experiment("vision/a", root=root, system_metrics=False) as a:
        a.files(prefix="/cfg", tags=["config", HOSTILE], metadata={"why": HOSTILE}).save_json({"lr": 0.1, "layers": [64, 32]}, "config.json")
        a.files(prefix="/logs").save_text("first line\n" + "x" * 300_000, "train.log")
        a.files(prefix="/evil").save_blob(HTML, "page.html")
        a.files(prefix="/evil").save_blob(SVG, "drawing.svg")
        a.files(prefix="/evil").save_text("named to hurt", HOSTILE)
        for step in range(4):
            a.metrics("samples").append(image=mldash.Image(shade(60 * step), caption=f"a at {step} {HOSTILE}"), step=step * 10)
            a.metrics("weights").append(hist=mldash.Histogram(np.random.default_rng(step).normal(step, 1.0, 500), bins=16), step=step)
            a.metrics("loss").append(value=1.0 / (step + 1), step=step)
    with mldash.Experiment("vision/b", root=root, system_metrics=False) as b:
        for step in (0, 15, 30):  # other steps: at 20 the compare view shows b's step 15
            b.metrics("samples").append(image=mldash.Image(shade(200 - step, (10, 10)), caption=f"b at {step}"), step=step)
    return root


@pytest.fixture(scope="module")
def server(root):
    server = UiServer(root)
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    with watched_page(browser, viewport={"width": 1400, "height": 1000}, accept_downloads=True) as page:
        yield page


def open_run(page, server, prefix="vision/a"):
    page.goto(server.url + "#/exp/" + prefix)
    page.wait_for_selector("#main[data-loaded]")


def image_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )


def test_files_section_lists_and_previews_json_and_text(page, server):
    open_run(page, server)
    page.wait_for_selector("#files-table tbody tr")
    names = page.eval_on_selector_all("#files-table tbody td.file-name", "tds => tds.map(t => t.textContent)")
    assert {"config.json", "train.log", "page.html", "drawing.svg", HOSTILE} <= set(names)
    assert not any(n.startswith("image_") for n in names)  # the media PNGs are hidden by default
    row = page.locator("#files-table tr", has_text="config.json")
    assert "config" in row.inner_text() and HOSTILE in row.inner_text()  # a tag, as text
    assert page.locator("#files-table img").count() == 0  # the hostile name and tag made no element
    row.locator("button.file-open").click()
    page.wait_for_selector("#preview-text")
    assert page.inner_text("#preview-text").strip() == '{\n  "lr": 0.1,\n  "layers": [\n    64,\n    32\n  ]\n}'
    page.locator("#files-table tr", has_text="train.log").locator("button.file-open").click()
    page.wait_for_function("() => document.querySelector('#preview-text')?.textContent.startsWith('first line')")
    assert len(page.inner_text("#preview-text")) <= 256 * 1024 + 10
    assert "the first" in page.inner_text("#file-preview")
    page.check("#files-media")
    page.wait_for_function("() => [...document.querySelectorAll('#files-table td.file-name')].some(t => t.textContent.startsWith('image_'))")
    page.locator("#files-table td.file-name button", has_text="image_").first.click()
    image_loaded(page, "#preview-image")
    screenshot(page, "files-section.png")


def test_html_and_svg_offer_no_preview_and_download(page, server):
    open_run(page, server)
    page.wait_for_selector("#files-table tbody tr")
    for name in ("page.html", "drawing.svg"):
        row = page.locator("#files-table tr", has_text=name)
        assert row.locator("button.file-open").count() == 0  # no preview
        with page.expect_download() as download:
            row.locator("a.download").click()
        path = download.value.path()
        assert open(path, "rb").read() == (HTML if name.endswith(".html") else SVG)
    # opening the file's URL itself in a tab downloads it too: nothing of it runs here
    href = page.locator("#files-table tr", has_text="page.html").locator("a.download").get_attribute("href")
    response = page.request.get(href)
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["content-type"] == "application/octet-stream"


def test_image_slider_changes_image_and_caption(page, server):
    open_run(page, server)
    card = "#media .media-card[data-type='image']"
    page.wait_for_selector(card + "[data-step='30']")  # the last step first
    image_loaded(page, card + " img")
    assert page.inner_text(card + " .media-caption") == f"a at 3 {HOSTILE}"
    assert "16×12 px" in page.inner_text(card + " .media-meta")
    first_file = page.get_attribute(card + " img", "data-file")
    slider = page.locator(card + " input.media-slider")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector(card + "[data-step='20']")
    page.wait_for_function("([sel, old]) => document.querySelector(sel).dataset.file !== old", arg=[card + " img", first_file])
    assert page.inner_text(card + " .media-caption") == f"a at 2 {HOSTILE}"
    slider.fill("0")
    page.wait_for_selector(card + "[data-step='0']")
    image_loaded(page, card + " img")
    assert page.inner_text(card + " .media-caption") == f"a at 0 {HOSTILE}"
    color = page.evaluate(
        """sel => { const i = document.querySelector(sel); const c = document.createElement('canvas');
        c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        return Array.from(g.getImageData(1, 1, 1, 1).data.slice(0, 3)); }""", card + " img")
    assert color == [0, 255, 60]
    assert page.locator("#charts .chart-card[data-metric='samples']").count() == 0  # no empty chart for it
    assert page.locator("#charts .chart-card[data-metric='loss']").count() == 1


def test_histogram_heatmap_draws_and_hovers(page, server):
    open_run(page, server)
    card = "#media .media-card[data-type='histogram']"
    page.wait_for_selector(card + " canvas.heatmap")
    page.wait_for_function("sel => document.querySelector(sel).textContent.includes('4 histograms')", arg=card)
    assert canvas_ink(page, card + " canvas")[0] > 2000
    box = page.locator(card + " canvas").bounding_box()
    page.mouse.move(box["x"] + 56 + (box["width"] - 66) * 0.9, box["y"] + 8 + (box["height"] - 34) * 0.3)
    tip = page.locator(card + " .heatmap-tip")
    tip.wait_for(state="visible")
    assert tip.inner_text().startswith("step 3")
    screenshot(page, "media-panels.png")


def test_compare_shows_both_runs_images_at_one_step(page, server):
    page.goto(server.url + "#/compare?run=vision/a&run=vision/b")
    page.wait_for_selector("#main[data-loaded]")
    card = "#compare-images .media-card[data-metric='samples']"
    page.wait_for_selector(card + "[data-step='30']")
    cells = card + " figure.compare-image"
    assert page.eval_on_selector_all(cells, "fs => fs.map(f => [f.dataset.run, f.dataset.step])") == [["vision/a", "30"], ["vision/b", "30"]]
    # the union of steps is 0, 10, 15, 20, 30: step 20 shows a's 20 and b's 15
    page.locator(card + " input.media-slider").fill("3")
    page.wait_for_selector(card + "[data-step='20']")
    assert page.eval_on_selector_all(cells, "fs => fs.map(f => f.dataset.step)") == ["20", "15"]
    captions = page.eval_on_selector_all(cells + " .media-caption", "cs => cs.map(c => c.textContent)")
    assert captions == [f"a at 2 {HOSTILE}", "b at 15"]
    image_loaded(page, cells + "[data-run='vision/a'] img")
    image_loaded(page, cells + "[data-run='vision/b'] img")
    page.locator(card + " input.media-slider").fill("0")
    page.wait_for_selector(card + "[data-step='0']")
    assert page.eval_on_selector_all(cells, "fs => fs.map(f => f.dataset.step)") == ["0", "0"]
    assert page.locator("#compare-charts .chart-card[data-metric='samples']").count() == 0
    screenshot(page, "compare-images.png")
