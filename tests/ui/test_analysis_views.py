"""The dashboard's analysis views in real headless Chromium (issue 16 item 5): the search
box's filter language with completion and the error caret, the compare view's grid of
every metric (lazy), groups with a mean and a band, the scatter and the parallel
coordinates; hostile names stay text everywhere."""

from __future__ import annotations

import math
import os
from urllib.parse import quote, urlencode

import pytest

import mldash

from _ui_support import HOSTILE, UiServer, canvas_ink, screenshot, watched_page

pytest.importorskip("playwright.sync_api")
if not os.path.exists("/usr/bin/chromium"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LRS = (0.1, 0.03, 0.01)
EXTRA = 24  # metrics beyond loss and acc: more charts than a screen holds


def _run(root, name, params, steps, seed=0, extra=0, acc=True, **kw):
    exp = mldash.Experiment(project="sweep", name=name, root=root, system_metrics=False, **kw)
    with exp:
        exp.params.set(**params)
        lr = params.get("lr", 0.05)
        for s in range(steps):
            exp.metrics("loss").append(value=math.exp(-lr * s) + 0.05 * seed, step=s)
            if acc:
                exp.metrics("acc").append(value=1 - math.exp(-lr * s), step=s)
        for m in range(extra):
            exp.metrics(f"extra/m{m:02d}").append_batch([{"value": m + 0.1 * s, "step": s} for s in range(5)])
        exp.summary.set(best=1 - lr)
    return exp.prefix


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui-analysis"))
    refs = []
    for lr in LRS:
        for seed in (1, 2, 3):  # the third seed logs fewer steps
            refs.append(_run(root, f"lr{lr}-s{seed}", {"lr": lr, "seed": seed, "opt": "adam" if lr > 0.02 else "sgd"},
                             40 if seed == 3 else 50, seed, EXTRA))
    refs.append(_run(root, "odd", {"lr": 0.05, "seed": 9}, 30, acc=False))  # no opt, no acc
    with mldash.Experiment(project="evil", name=HOSTILE, root=root, system_metrics=False) as evil:
        evil.params.set(**{HOSTILE: HOSTILE, "note": "<script>alert(2)</script>"})
        evil.metrics(HOSTILE).append(value=1.5, step=0)
        evil.metrics(HOSTILE).append(value=0.5, step=1)
    with mldash.Experiment(project="evil", name="twin", root=root, system_metrics=False) as twin:
        twin.params.set(**{HOSTILE: "plain", "note": "<b>bold</b>"})
        twin.metrics(HOSTILE).append(value=2.5, step=0)
        twin.metrics(HOSTILE).append(value=1.0, step=1)
    return {"root": root, "sweep": refs, "evil": [evil.prefix, twin.prefix]}


@pytest.fixture(scope="module")
def server(root):
    server = UiServer(root["root"])
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    """A watched page that also fails on any failed request but a bad filter's 400 (which
    the page shows under the box)."""

    def bad_filter(response):
        return response.status == 400 and ("/api/experiments?" in response.url or "/api/keys?" in response.url)

    with watched_page(browser, console_ok=lambda text: "Failed to load resource" in text,
                      response_ok=bad_filter) as page:
        yield page


def prefixes(page) -> list[str]:
    return sorted(page.eval_on_selector_all("#runs tbody tr[data-prefix]", "rows => rows.map(r => r.dataset.prefix)"))


def wait_rows(page, n: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === {n}")


def suggestions(page) -> list[str]:
    return page.eval_on_selector_all("#filter-text-suggest li", "ls => ls.map(l => l.textContent)")


def compare_url(server, refs, **extra) -> str:
    return server.url + "#/compare?" + urlencode([("run", r) for r in refs] + list(extra.items()))


def test_the_search_box_filters_on_the_server_completes_keys_and_keeps_the_last_good_result(page, server):
    page.goto(server.url)
    page.wait_for_selector("#main[data-loaded] #runs tbody tr[data-prefix]")
    wait_rows(page, 12)
    page.click("#filter-text")
    page.keyboard.type("metrics.ac")
    page.wait_for_selector("#filter-text-suggest li")
    assert suggestions(page) == ["metrics.acc.last", "metrics.acc.min", "metrics.acc.max"]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute("#filter-text", "aria-activedescendant") == "filter-text-option-1"
    page.keyboard.press("Enter")  # accepts the highlighted key, and a space after it
    assert page.input_value("#filter-text") == "metrics.acc.min "
    page.keyboard.type("= 0 and params.o")
    page.wait_for_selector("#filter-text-suggest li")
    assert suggestions(page) == ["params.opt"]
    page.keyboard.press("Escape")  # closes the list, keeps the text
    assert page.locator("#filter-text-suggest").is_hidden() and page.input_value("#filter-text").endswith("params.o")
    page.keyboard.press("ArrowDown")  # opens it again, first key highlighted
    page.keyboard.press("Tab")
    page.keyboard.type('= "sgd"')
    wait_rows(page, 3)
    assert prefixes(page) == [f"sweep/lr0.01-s{s}" for s in (1, 2, 3)]
    assert page.inner_text("#filter-mode") == "filter"
    assert "filter=metrics.acc.min" in page.url  # shareable
    page.keyboard.press("Enter")  # a commit: the next edit gets its own history entry

    page.keyboard.type(" and (")  # does not parse: the caret under the box, the table as it was
    page.wait_for_selector("#filter-text-error:not([hidden])")
    text = page.input_value("#filter-text")
    error = page.inner_text("#filter-text-error").splitlines()
    assert error[0].startswith(f"invalid filter at column {len(text) + 1}: expected a key")
    assert error[-2] == "  " + text and error[-1] == " " * (len(text) + 2) + "^"  # the caret after the "("
    assert page.get_attribute("#filter-text", "aria-invalid") == "true"
    assert len(prefixes(page)) == 3 and page.inner_text("#filter-mode") == "the last result that worked"
    assert page.eval_on_selector("#filter-text-error", "e => getComputedStyle(e).fontFamily").startswith("ui-monospace")
    screenshot(page, "ui-filter-error.png")

    page.fill("#filter-text", "s3")  # no operator: the name search
    page.wait_for_selector("#filter-mode:text('name search')")
    assert prefixes(page) == [f"sweep/lr{lr}-s3" for lr in (0.01, 0.03, 0.1)]
    assert page.inner_text("#filter-mode") == "name search (not a filter)" and page.locator("#filter-text-error").is_hidden()
    page.go_back()  # back to the filter before this edit
    page.wait_for_function("() => document.querySelector('#filter-text').value.endsWith('\"sgd\"')")
    wait_rows(page, 3)
    assert prefixes(page) == [f"sweep/lr0.01-s{s}" for s in (1, 2, 3)]

    other = page.context.new_page()  # the URL alone opens the same list
    other.goto(server.url + "#/?filter=" + quote("params.lr >= 0.03 and params.seed in [1, 9]"))
    other.wait_for_function("() => document.querySelectorAll('#runs tbody tr[data-prefix]').length === 3")
    assert sorted(other.eval_on_selector_all("#runs tbody tr[data-prefix]", "rs => rs.map(r => r.dataset.prefix)")) == [
        "sweep/lr0.03-s1", "sweep/lr0.1-s1", "sweep/odd"]
    assert other.input_value("#filter-text") == "params.lr >= 0.03 and params.seed in [1, 9]"


def test_compare_charts_every_metric_lazily_and_groups_seeds_with_a_band(page, server, root):
    runs = root["sweep"][:9]
    series = []
    page.on("request", lambda r: "/api/series?" in r.url and series.append(r.url))
    page.goto(compare_url(server, runs))
    page.wait_for_selector("#main[data-loaded] #compare-charts .chart-card[data-loaded] .chart-note:text-matches('9 runs')")
    cards = page.eval_on_selector_all("#compare-charts .chart-card", "cs => cs.map(c => c.dataset.metric)")
    assert cards[:3] == ["acc", "extra/m00", "extra/m01"] and len(cards) == EXTRA + 2 and cards[-1] == "loss"
    page.wait_for_timeout(500)
    made = page.locator("#compare-charts .chart-card[data-loaded]").count()
    assert 3 <= made <= 12 and len(series) == 9 * made  # only the charts near the screen asked
    page.locator("#compare-charts .chart-card[data-metric='loss']").scroll_into_view_if_needed()
    page.wait_for_selector("#compare-charts .chart-card[data-metric='loss'] canvas")
    assert page.locator("#compare-charts .chart-card[data-loaded]").count() < len(cards)  # skipped past the middle

    # Mean over seeds: one group per lr (opt follows lr), the mean line and a band.
    page.select_option("#compare-group", "over:seed")
    page.wait_for_selector("#compare-groups")
    assert page.locator("#compare-groups li").all_inner_texts()[0].startswith("lr=0.01, opt=sgd (3 runs)")
    loss = "#compare-charts .chart-card[data-metric='loss']"
    page.wait_for_selector(f"{loss} .chart-note:text-matches('3 groups of 9 runs · mean, min to max')")
    labels = page.eval_on_selector_all(f"{loss} .u-legend tr.u-series", "rs => rs.filter(r => r.style.display !== 'none').map(r => r.querySelector('th').textContent)")
    assert labels[1:] == ["lr=0.01, opt=sgd (3 runs)", "lr=0.03, opt=adam (3 runs)", "lr=0.1, opt=adam (3 runs)"]
    assert "group=over%3Aseed" in page.url
    with_band = canvas_ink(page, f"{loss} canvas")[0]
    screenshot(page, "ui-compare-groups.png")
    page.select_option("#compare-band", "none")
    page.wait_for_selector(f"{loss} .chart-note:text-matches('groups of 9 runs · mean$')")
    page.wait_for_timeout(200)
    assert canvas_ink(page, f"{loss} canvas")[0] < with_band * 0.8  # the band's fill is gone
    page.select_option("#compare-band", "std")
    page.wait_for_selector(f"{loss} .chart-note:text-matches('mean ± std')")

    # Reloading the address keeps the grouping; "group by" makes a group per value.
    page.goto(compare_url(server, runs, group="by:seed", band="minmax"))
    page.wait_for_selector("#compare-groups")
    assert [t.split(" (")[0] for t in page.locator("#compare-groups li").all_inner_texts()] == ["seed=1", "seed=2", "seed=3"]
    assert page.input_value("#compare-group") == "by:seed"


def test_groups_align_runs_on_their_steps_without_extrapolating(page, server):
    page.goto(server.url)
    got = page.evaluate("""async () => {
        const m = await import('./static/js/groups.js');
        const a = m.aggregate([[[0, 1, 2, 3], [1, 2, 3, 4]], [[0, 2], [3, 5]], [[1], [null]]]);
        const g = m.groupRuns([{ref: 'a', params: {lr: 1, seed: 1}}, {ref: 'b', params: {lr: 1, seed: 2}},
                               {ref: 'c', params: {lr: 2, seed: 1}}, {ref: 'd', params: {seed: 3}}], 'over', 'seed');
        return {a, std: m.bandEdges(a, 'std'), g};
    }""")
    a = got["a"]
    assert a["xs"] == [0, 1, 2, 3] and a["n"] == [2, 2, 2, 1]  # the second run ends at 2: not carried on
    assert a["mean"] == [2, 3, 4, 4] and a["min"] == [1, 2, 3, 4] and a["max"] == [3, 4, 5, 4]  # x=1: (3+5)/2 for the second
    assert got["std"][1][0] == pytest.approx(2 + math.sqrt(2)) and got["std"][0][3] == 4  # one run: no spread
    assert got["g"] == [{"label": "lr=1", "refs": ["a", "b"]}, {"label": "lr=2", "refs": ["c"]}, {"label": "lr=–", "refs": ["d"]}]


def test_scatter_and_parallel_coordinates_across_the_runs(page, server, root):
    runs = root["sweep"]  # the nine and "odd", which has no opt and no acc
    page.goto(compare_url(server, runs))
    page.wait_for_selector("#main[data-loaded] #scatter circle.pt")
    assert page.input_value("#scatter-x") == "params.lr"  # the first parameter that differs
    page.select_option("#scatter-y", "metrics.loss.min")
    page.wait_for_function("() => document.querySelector('#scatter-note').textContent.startsWith('10 of 10 runs')")
    assert page.locator("#scatter circle.pt").count() == 10
    page.select_option("#scatter-x", "params.opt")  # strings: an ordinal axis
    page.wait_for_selector("#scatter-note:text-matches('9 of 10 runs · 1 without a value')")
    ticks = page.eval_on_selector_all("#scatter text.tick", "ts => ts.map(t => t.textContent)")
    assert "adam" in ticks and "sgd" in ticks
    page.select_option("#scatter-x", "params.lr")
    page.check("#scatter-logx")
    page.wait_for_selector("#scatter text.axis-title:text('params.lr (log)')")
    point = page.locator("#scatter circle.pt[data-ref='sweep/lr0.1-s3']")
    point.hover()
    assert page.inner_text("#scatter .plot-tip").splitlines() == ["sweep/lr0.1-s3", "params.lr = 0.1", f"metrics.loss.min = {math.exp(-0.1 * 39) + 0.15:.6g}"]

    lines = page.locator("#parcoords polyline.pc-line")
    assert lines.count() == 10
    axes = page.eval_on_selector_all("#parcoords g.pc-axis", "gs => gs.map(g => [g.dataset.key, g.dataset.kind])")
    assert axes == [["params.lr", "number"], ["params.opt", "category"], ["params.seed", "number"], ["metrics.loss.last", "number"]]
    page.select_option("#parcoords-metric", "metrics.acc.last")
    page.wait_for_selector("#parcoords g.pc-axis[data-key='metrics.acc.last']")
    assert page.locator("#parcoords g.pc-axis[data-key='params.opt'] text.tick:text('none')").count() == 1  # odd has no opt
    strokes = page.eval_on_selector_all("#parcoords polyline", "ls => Object.fromEntries(ls.map(l => [l.dataset.ref, l.getAttribute('stroke')]))")
    assert strokes["sweep/odd"] == "#94a3b8"  # no acc: grey, not on the colour ramp
    assert strokes["sweep/lr0.1-s1"] == "rgb(220, 38, 38)" and strokes["sweep/lr0.01-s3"] == "rgb(37, 99, 235)"  # high red, low blue
    page.click("#parcoords-params summary")
    page.uncheck("#parcoords-params input[data-key='params.seed']")
    page.wait_for_function("() => document.querySelectorAll('#parcoords g.pc-axis').length === 3")
    screenshot(page, "ui-compare-plots.png")
    page.click("#parcoords-params summary")
    page.locator("#parcoords polyline[data-ref='sweep/lr0.03-s2']").dispatch_event("click")
    page.wait_for_selector("#main[data-loaded] #exp-title:text('lr0.03-s2')")
    page.go_back()
    page.wait_for_selector("#main[data-loaded] #scatter circle.pt")
    page.click("#scatter circle.pt[data-ref='sweep/lr0.01-s1']")  # a click opens the run
    page.wait_for_selector("#main[data-loaded] #exp-title:text('lr0.01-s1')")


def test_the_plots_axes_are_kept_in_the_url_so_a_link_shows_them(page, server, root):
    url = compare_url(server, root["sweep"], sx="params.seed", sy="metrics.loss.min", slog="y", pm="metrics.acc.last")
    page.goto(url + "&pc=params.lr&pc=params.opt")
    page.wait_for_selector("#main[data-loaded] #scatter circle.pt")
    assert page.input_value("#scatter-x") == "params.seed" and page.input_value("#scatter-y") == "metrics.loss.min"
    assert page.is_checked("#scatter-logy") and not page.is_checked("#scatter-logx")
    assert page.input_value("#parcoords-metric") == "metrics.acc.last"
    page.wait_for_selector("#parcoords g.pc-axis[data-key='metrics.acc.last']")
    axes = page.eval_on_selector_all("#parcoords g.pc-axis", "gs => gs.map(g => g.dataset.key)")
    assert axes == ["params.lr", "params.opt", "metrics.acc.last"]
    page.select_option("#scatter-x", "params.lr")
    page.check("#scatter-logx")
    page.click("#parcoords-params summary")
    page.check("#parcoords-params input[data-key='params.seed']")
    page.wait_for_function("() => location.hash.includes('sx=params.lr') && location.hash.includes('slog=xy')"
                           " && location.hash.includes('pc=params.seed')")
    page.reload()  # a fresh page: only the URL knows the choices
    page.wait_for_selector("#main[data-loaded] #scatter circle.pt")
    assert page.input_value("#scatter-x") == "params.lr" and page.is_checked("#scatter-logx")
    page.wait_for_function("() => document.querySelectorAll('#parcoords g.pc-axis').length === 4")


def test_hostile_names_keys_and_values_stay_text_in_the_new_views(page, server, root):
    page.goto(server.url + "#/?filter=" + quote(f'project = evil and name = "{HOSTILE}" and ('))
    page.wait_for_selector("#filter-text-error:not([hidden])")
    assert HOSTILE in page.inner_text("#filter-text-error")
    page.fill("#filter-text", "project = evil and params.")
    page.wait_for_selector("#filter-text-error:not([hidden])")
    page.click("#filter-text")
    page.keyboard.press("End")
    page.keyboard.type('"<')
    page.wait_for_selector("#filter-text-suggest li")
    assert suggestions(page) == [f'params."{HOSTILE}"']  # a quoted key: its "<" is no operator
    page.keyboard.press("Tab")  # the first key (Enter takes only a highlighted one)
    page.keyboard.type(f'= "{HOSTILE}"')
    wait_rows(page, 1)
    assert prefixes(page) == [f"evil/{HOSTILE}"]

    page.goto(compare_url(server, root["evil"], group=f"by:{HOSTILE}"))
    page.wait_for_selector("#main[data-loaded] #compare-groups")
    assert HOSTILE in page.inner_text("#compare-groups") and HOSTILE in page.inner_text("#compare-group")
    page.wait_for_selector("#compare-charts .chart-card[data-loaded] canvas")
    assert page.eval_on_selector_all("#compare-charts .chart-card", "cs => cs.map(c => c.dataset.metric)") == [HOSTILE]
    assert HOSTILE in page.inner_text("#compare-charts .chart-card h3")
    page.wait_for_selector("#scatter circle.pt")
    assert page.input_value("#scatter-x") == f'params."{HOSTILE}"'  # quoted as a filter spells it
    assert HOSTILE in page.eval_on_selector_all("#scatter text.tick", "ts => ts.map(t => t.textContent)")
    page.hover(f"#scatter circle.pt[data-ref='evil/{HOSTILE}']")
    assert page.inner_text("#scatter .plot-tip").splitlines()[0] == f"evil/{HOSTILE}"
    axes = page.eval_on_selector_all("#parcoords g.pc-axis", "gs => gs.map(g => g.dataset.key)")
    assert axes == [f'params."{HOSTILE}"', "params.note", f'metrics."{HOSTILE}".last']
    ticks = page.eval_on_selector_all("#parcoords text", "ts => ts.map(t => t.textContent)")
    assert "<script>alert(2)</script>" in ticks and "<b>bold</b>" in ticks
    assert page.eval_on_selector_all("img, script:not([src]), b, #main svg script", "els => els.length") == 0
