"""The dashboard in real headless Chromium against a real `mldash ui` subprocess.

Screenshots land in test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import math
import os

import pytest

import mldash

from _ui_support import HOSTILE, UiServer, canvas_ink, fill_root, screenshot, watched_page

pytest.importorskip("playwright.sync_api")
if not os.path.exists("/usr/bin/chromium"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui-browser"))
    fill_root(root)
    exp = mldash.Experiment("long/spiky", root=root)
    with exp:
        exp.params.set(lr=0.5)
        exp.metrics("loss").append_batch(
            [{"value": 10.0 if i == 12_345 else math.sin(i / 300), "step": i} for i in range(40_000)]
        )
    return root


@pytest.fixture(scope="module")
def server(root):
    server = UiServer(root)
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    with watched_page(browser) as page:
        yield page


def open_list(page, server):
    page.goto(server.url)
    page.wait_for_selector("#main[data-loaded] #runs tbody tr[data-prefix]")


def shown_prefixes(page) -> list[str]:
    return page.eval_on_selector_all("#runs tbody tr[data-prefix]", "rows => rows.map(r => r.dataset.prefix)")


def test_experiments_view_lists_runs_with_status_params_and_latest_metrics(page, server):
    open_list(page, server)
    assert len(shown_prefixes(page)) == 5
    row = page.locator("#runs tr[data-prefix='vision/resnet/lr-0.1']")
    assert "COMPLETED" in row.inner_text()
    headers = page.eval_on_selector_all("#runs thead th", "ths => ths.map(t => t.textContent)")
    assert "lr" in headers and "train/loss" in headers
    cells = row.locator("td").all_inner_texts()
    assert cells[headers.index("lr")] == "0.1"
    assert page.locator("#runs tr[data-prefix='nlp/bert-crash'] .status").inner_text() == "FAILED"
    screenshot(page, "ui-experiments.png")


def test_filters_by_text_status_params_and_folder_and_sorts(page, server):
    open_list(page, server)
    page.fill("#filter-text", "lr-0.01")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 1")
    assert shown_prefixes(page) == ["vision/resnet/lr-0.01"]
    page.fill("#filter-text", "")
    page.select_option("#filter-status", "FAILED")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 1")
    assert shown_prefixes(page) == ["nlp/bert-crash"]
    page.select_option("#filter-status", "")
    page.fill("#filter-params", "lr>=0.05, model.arch=resnet18")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 1")
    assert shown_prefixes(page) == ["vision/resnet/lr-0.1"]
    page.fill("#filter-params", "")
    page.click(".tree a[data-path='nlp']")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 2")
    assert set(shown_prefixes(page)) == {"nlp/bert-crash", f"nlp/{HOSTILE}"}
    page.click(".tree a[data-path='']")
    page.click("#runs th[data-sort='p:lr']")  # ascending, runs without lr last
    page.wait_for_selector("#runs th.sorted.asc[data-sort='p:lr']")
    assert shown_prefixes(page)[:4] == ["nlp/bert-crash", "vision/resnet/lr-0.01", "vision/resnet/lr-0.1", "long/spiky"]
    page.click("#runs th[data-sort='p:lr']")
    page.wait_for_selector("#runs th.sorted.desc[data-sort='p:lr']")
    assert shown_prefixes(page)[0] == "long/spiky"


def test_experiment_view_draws_every_chart_and_shows_params_logs_checkpoints(page, server):
    open_list(page, server)
    page.click("#runs tr[data-prefix='vision/resnet/lr-0.1'] td.name a")
    page.wait_for_selector("#main[data-loaded] #exp-title")
    assert page.url.endswith("#/exp/vision%2Fresnet%2Flr-0.1")
    page.wait_for_function("() => document.querySelectorAll('#charts canvas').length === 2")
    page.wait_for_function("() => [...document.querySelectorAll('.chart-note')].every(n => /points/.test(n.textContent))")
    assert all(ink > 200 for ink in canvas_ink(page, "#charts canvas"))
    assert page.locator("#errors").is_hidden()
    page.fill("#param-search", "arch")
    assert page.locator("#params-table tr").all_inner_texts() == ["model.arch\tresnet18"]
    assert page.locator("#checkpoints tr.best").inner_text().startswith("★ ckpt/epoch=2.ckpt")
    assert page.locator("#logs .log").count() == 41
    page.select_option("#log-level", "warn")
    page.wait_for_function("() => document.querySelectorAll('#logs .log').length === 1")
    assert "learning rate looks high" in page.locator("#logs .log").inner_text()
    page.select_option("#log-level", "")
    page.wait_for_function("() => document.querySelectorAll('#logs .log').length === 41")  # not the warn list
    page.fill("#log-search", "batch 13 ")
    page.wait_for_function("() => document.querySelectorAll('#logs .log').length === 1")
    assert "epoch 1 batch 13 done" in page.locator("#logs .log").inner_text()
    screenshot(page, "ui-experiment.png")
    page.click("#crumbs a:text('Experiments')")
    page.wait_for_selector("#main[data-loaded] #runs")


def test_chart_options_switch_axis_smooth_and_log_scale(page, server):
    page.goto(server.url + "#/exp/vision%2Fresnet%2Flr-0.1")
    page.wait_for_function("() => document.querySelectorAll('#charts canvas').length === 2")
    before = canvas_ink(page, "#charts canvas")
    page.select_option("#x-axis", "time")
    page.wait_for_function("() => [...document.querySelectorAll('#charts .u-legend th')].some(t => t.textContent.startsWith('time'))")
    page.select_option("#x-axis", "step")
    page.check("#log-scale")
    page.eval_on_selector("#smoothing", "el => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => [...document.querySelectorAll('#charts .u-legend th')].some(t => t.textContent.includes('(raw)'))")
    after = canvas_ink(page, "#charts canvas")
    assert all(ink > 200 for ink in after) and after != before
    page.uncheck("#log-scale")
    page.eval_on_selector("#smoothing", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")


def test_a_long_series_is_downsampled_and_zooming_shows_exact_points(page, server):
    page.goto(server.url + "#/exp/long%2Fspiky")
    page.wait_for_selector(".chart-note:text-matches('40,000 points')")
    note = page.locator(".chart-note").inner_text()
    assert "min/max per pixel" in note
    assert canvas_ink(page, "#charts canvas")[0] > 500
    box = page.locator("#charts .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.30, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.32, y, steps=5)
    page.mouse.up()
    page.wait_for_selector(".chart-note:text-matches('zoomed')")
    assert "min/max" not in page.locator(".chart-note").inner_text()  # exact points now
    assert canvas_ink(page, "#charts canvas")[0] > 200
    page.dblclick("#charts .u-over")
    page.wait_for_selector(".chart-note:text-matches('min/max per pixel')")


def test_failed_run_shows_its_error_and_traceback_on_top(page, server):
    page.goto(server.url + "#/exp/nlp%2Fbert-crash")
    page.wait_for_selector("#errors .error-box")
    box = page.locator("#errors .error-box")
    assert "RuntimeError" in box.inner_text() and "CUDA out of memory" in box.inner_text()
    assert "Traceback (most recent call last)" in box.locator("pre.traceback").inner_text()
    assert page.locator("#exp-status").inner_text() == "FAILED"
    errors_top = page.locator("#errors").bounding_box()["y"]
    assert errors_top < page.locator("#charts").bounding_box()["y"]
    screenshot(page, "ui-failed.png")


def test_compare_charts_every_metric_and_lists_the_params_that_differ(page, server):
    open_list(page, server)
    assert page.locator("#compare").is_disabled()
    page.check("#runs tr[data-prefix='vision/resnet/lr-0.1'] td.pick input")
    page.check("#runs tr[data-prefix='vision/resnet/lr-0.01'] td.pick input")
    page.click("#compare")
    page.wait_for_selector("#main[data-loaded] #diff-table")
    assert "#/compare?" in page.url
    cards = page.eval_on_selector_all("#compare-charts .chart-card", "cs => cs.map(c => c.dataset.metric)")
    assert cards == ["train/loss", "val/accuracy"]  # every metric at once, no menu
    for name in cards:
        card = f"#compare-charts .chart-card[data-metric='{name}']"
        page.wait_for_selector(f"{card} .chart-note:text-matches('2 runs')")
        assert canvas_ink(page, f"{card} canvas")[0] > 300
        labels = page.eval_on_selector_all(f"{card} .u-legend th", "ths => ths.map(t => t.textContent)")
        assert any("lr-0.1" in t for t in labels) and any("lr-0.01" in t for t in labels)
    rows = page.locator("#diff-table tbody tr").all_inner_texts()
    assert rows == ["lr\t0.1\t0.01"]
    screenshot(page, "ui-compare.png")


def test_hostile_names_params_and_logs_render_as_text(page, server):
    open_list(page, server)
    assert page.locator("#runs").inner_text().count(HOSTILE) >= 3  # name, tag, param column and value
    assert page.eval_on_selector_all("#main img", "imgs => imgs.length") == 0
    page.click(f"#runs tr[data-prefix='nlp/{HOSTILE}'] td.name a")
    page.wait_for_selector("#main[data-loaded] #errors .error-box")
    assert page.locator("#exp-title").inner_text() == HOSTILE
    assert page.locator("#errors pre.traceback").inner_text() == HOSTILE
    assert HOSTILE in page.locator("#logs").inner_text()
    assert "<script>alert(2)</script>" in page.locator("#params").inner_text()
    page.wait_for_selector("#charts canvas")
    assert page.locator("#charts h3").inner_text() == HOSTILE
    assert page.eval_on_selector_all("img, script:not([src])", "els => els.length") == 0
    screenshot(page, "ui-hostile.png")


def test_a_running_experiment_updates_live(page, server, root):
    exp = mldash.Experiment("live/training", root=root)
    exp.params.set(lr=0.3)
    loss = exp.metrics("loss")
    loss.append_batch([{"value": 1.0 / (s + 1), "step": s} for s in range(10)])
    exp.log("started training")
    exp.flush()
    try:
        held = []  # the first logs request, held: the live mark must not wait for it
        page.route("**/api/logs?**", lambda route: held.append(route) if not held else route.continue_())
        page.goto(server.url + "#/exp/live%2Ftraining")
        page.wait_for_selector("#exp-status:text('RUNNING')")
        page.wait_for_function("() => document.getElementById('live').textContent === '● live'", timeout=5_000)
        assert len(held) == 1
        held[0].continue_()
        page.wait_for_selector(".chart-note:text-matches('^10 points')")
        ink_before = canvas_ink(page, "#charts canvas")[0]
        loss.append_batch([{"value": 2.0 + math.sin(s), "step": s} for s in range(10, 200)])
        exp.metrics("accuracy").append(value=0.5, step=200)
        exp.log("epoch 1 done", level="warn")
        exp.flush()
        page.wait_for_selector(".chart-note:text-matches('^200 points')", timeout=20_000)
        page.wait_for_function("() => document.querySelectorAll('#charts canvas').length === 2", timeout=20_000)
        page.wait_for_selector("#logs .log:has-text('epoch 1 done')", timeout=20_000)
        assert canvas_ink(page, "#charts canvas")[0] > ink_before
        screenshot(page, "ui-live.png")
    finally:
        exp.finish()
    page.wait_for_selector("#exp-status:text('COMPLETED')", timeout=20_000)
    page.wait_for_function("() => document.getElementById('live').textContent === ''")


def test_a_big_table_draws_a_page_of_rows_then_more_on_scroll_and_filters_cover_all(page, tmp_path):
    root = str(tmp_path)
    for i in range(130):
        exp = mldash.Experiment(project="sweep", name=f"trial-{i:03d}", root=root)
        exp.params.set(trial=i, lr=0.001 * (i + 1))
        exp.finish()
    server = UiServer(root)
    try:
        page.goto(server.url)
        page.wait_for_selector("#main[data-loaded] #runs tbody tr[data-prefix]")
        assert page.locator("#count").inner_text() == "130 of 130 experiments"
        assert len(shown_prefixes(page)) == 100
        page.locator("#runs tr.more").scroll_into_view_if_needed()
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 130")
        page.fill("#filter-params", "trial>=125")  # a filter reaches rows never drawn before
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 5")
        page.fill("#filter-params", "")
        page.wait_for_selector("#count:text('130 of 130 experiments')")
        page.click("#runs th[data-sort='p:trial']")
        page.wait_for_selector("#runs th.sorted.asc[data-sort='p:trial']")
        assert shown_prefixes(page)[:2] == ["sweep/trial-000", "sweep/trial-001"]
    finally:
        server.stop()


def test_a_big_series_not_read_yet_draws_a_coarse_sample_at_once_then_every_spike(page, tmp_path):
    root = str(tmp_path)
    exp = mldash.Experiment("big/run", root=root)
    with exp:
        exp.metrics("loss").append_batch(
            [{"value": 50.0 if i == 33_333 else math.sin(i / 300), "step": i} for i in range(60_000)]
        )
    # Coarse views from 1 MiB unread (not 16), and no background reading that could get there first.
    tuning = {"MLDASH_UI_COARSE_BYTES": str(1 << 20), "MLDASH_UI_WARM": "0"}
    os.environ.update(tuning)
    try:
        server = UiServer(root, "--no-cache")
    finally:
        for key in tuning:
            del os.environ[key]
    page.add_init_script(
        "window.__notes = []; new MutationObserver(() => document.querySelectorAll('.chart-note')"
        ".forEach((n) => window.__notes.push(n.textContent))).observe(document, {subtree: true, childList: true, characterData: true});"
    )
    try:
        page.goto(server.url + "#/exp/big%2Frun")
        page.wait_for_selector(".chart-note:text-matches('min/max per pixel')")
        notes = page.evaluate("window.__notes")
        assert any(n.startswith("60,000 points · reading all points") for n in notes)
        assert canvas_ink(page, "#charts canvas")[0] > 500
        spike = page.evaluate(
            "async () => Math.max(...(await (await fetch('api/series?prefix=big/run&name=loss&x=step&width=600')).json()).points.value)"
        )
        assert spike == 50.0
    finally:
        server.stop()


def test_system_section_and_console_tail_with_colours_and_hostile_text(page, tmp_path):
    from _ui_support import system_run

    root = str(tmp_path / "root")
    prefix = system_run(root)
    server = UiServer(root)
    try:
        page.goto(server.url + "#/exp/" + prefix.replace("/", "%2F"))
        page.wait_for_selector("#system canvas")
        page.wait_for_selector("#console .console-line:nth-child(4)")
        page.wait_for_timeout(300)
        assert all(ink > 200 for ink in canvas_ink(page, "#system canvas"))
        metric_cards = page.eval_on_selector_all("#charts .chart-card", "cs => cs.map(c => c.dataset.metric)")
        assert metric_cards == ["loss"]
        assert "sys/cpu" in page.eval_on_selector_all("#system .chart-card", "cs => cs.map(c => c.dataset.metric)")
        lines = page.eval_on_selector_all("#console .console-line", "ls => ls.map(l => l.textContent)")
        assert lines == ["starting up", "red alert plain", HOSTILE, "a warning on stderr"]
        assert page.locator("#console img").count() == 0
        assert page.inner_text("#console .ansi-fg-31") == "red alert"
        page.select_option("#console-stream", "stderr")
        assert page.eval_on_selector_all("#console .console-line", "ls => ls.map(l => l.textContent)") == [
            "red alert plain", "a warning on stderr"]
        page.select_option("#console-stream", "")
        page.fill("#console-search", "onerror")
        page.wait_for_selector("#console .console-line:nth-child(2)", state="detached")
        assert page.inner_text("#console .console-line") == HOSTILE
    finally:
        server.stop()
