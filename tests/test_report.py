"""The report as an auditor uses it, in a real headless Chromium (tests/browser.py): the class page's
map answers a hover with the image and heatmap, a box selection and the cluster button select the
right images, and the exported CSV/JSON files (downloaded to disk) hold exactly their ids; the
index ranks and filters the classes. Plus the ranking rule and the words, without a browser."""
import csv
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from spray.report import words
from spray.datasets.truth import Group, judge
from spray.report.build import rank_classes, write_index

from .browser import CHROMIUM, Browser

SHOTS = Path(os.environ.get("SPRAY_SCREENSHOTS", "reports/screenshots"))

needs_browser = pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                                   reason="Chromium not installed (.ci/run installs it; apt-get install chromium)")

POINTS_IN_BOX = """(() => {
  const gd = document.getElementById('map'), L = gd._fullLayout, r = gd.getBoundingClientRect();
  const px = (t, j) => [r.left + L._size.l + L.xaxis.l2p(t.x[j]), r.top + L._size.t + L.yaxis.l2p(t.y[j])];
  const flagged = gd.data.find(t => t.name.includes('(flagged)'));
  const pts = flagged.x.map((_, j) => px(flagged, j));
  const box = [Math.min(...pts.map(p => p[0])) - 6, Math.min(...pts.map(p => p[1])) - 6,
               Math.max(...pts.map(p => p[0])) + 6, Math.max(...pts.map(p => p[1])) + 6];
  // inside the box, and inside by more than a pixel: a point on the box's edge (within a pixel, the
  // drag's rounding) may fall either side of Plotly's selection
  const inside = [], clear = [];
  const within = (x, y, m) => x >= box[0] + m && x <= box[2] - m && y >= box[1] + m && y <= box[3] - m;
  gd.data.forEach(t => t.x.forEach((_, j) => { const [x, y] = px(t, j);
    if (within(x, y, 0)) inside.push(t.customdata[j]);
    if (within(x, y, 1)) clear.push(t.customdata[j]); }));
  return {box, first: pts[0], first_index: flagged.customdata[0], inside, clear};
})()"""


def _downloaded(folder: Path, name: str, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = folder / name
        if path.is_file() and path.stat().st_size > 0 and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded into {folder}: {list(folder.iterdir())}")


@contextmanager
def _class_page(page: Path, tmp_path: Path, downloads: Path):
    """A class page opened in Chromium, its map drawn, downloads going to ``downloads``."""
    downloads.mkdir()
    with Browser(tmp_path / "profile", 1280, 1000) as b:
        b.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        b.goto(page.as_uri())
        b.wait_for("document.body.dataset.ready === 'map'")
        yield b


@needs_browser
def test_class_page_preview_selection_and_export(demo_run, tmp_path):
    assert CHROMIUM, "CI must have Chromium (.ci/run installs Debian's chromium)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = demo_run / "report" / "class-00000000" / "index.html"
    summary = json.loads((page.parent / "summary.json").read_text())
    flagged = next(c for c in summary["clusters"] if c["flagged"])
    downloads = tmp_path / "downloads"
    with _class_page(page, tmp_path, downloads) as b:
        # every picture the page cuts its tiles from loads; nothing is fetched from a network
        sheets = b.eval("""Promise.all([...new Set([...document.querySelectorAll('.sprite')].map(s =>
            getComputedStyle(s).backgroundImage.slice(5, -2)))].map(u => new Promise(ok => {
            const i = new Image(); i.onload = () => ok([u, i.naturalWidth]); i.onerror = () => ok([u, 0]); i.src = u; })))""")
        assert len(sheets) == 3 and all(width > 0 for _, width in sheets), sheets
        sheets = [u for u, _ in sheets]
        fetched = b.eval("[...document.querySelectorAll('script[src], link[href], img[src]')]"
                         ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
        assert "../assets/plotly.min.js" in fetched and not any("//" in u for u in fetched), fetched
        assert all(u.startswith(page.parent.as_uri()) for u in sheets), sheets
        assert b.eval("typeof Plotly") == "object"
        assert b.eval("document.documentElement.scrollWidth <= window.innerWidth")
        # hover a flagged point: its image, heatmap and overlay appear in the preview
        geometry = b.eval(POINTS_IN_BOX)
        b.eval("document.getElementById('map').scrollIntoView({block: 'center'})")
        geometry = b.eval(POINTS_IN_BOX)
        b.mouse("mouseMoved", *geometry["first"])
        shown = b.wait_for("document.getElementById('preview').dataset.sample")
        ids = b.eval("JSON.parse(document.getElementById('spray-data').textContent).ids")
        assert b.eval("document.querySelectorAll('#preview .sprite').length") == 4       # image, heatmap, overlay (2)
        assert ids[int(shown)] in b.eval("document.getElementById('preview').textContent")
        assert int(shown) == geometry["first_index"]
        assert "flagged" in b.eval("document.getElementById('preview').textContent")
        b.screenshot(SHOTS / "class-hover.png")
        # box-select around the flagged cluster: the selection is every point inside the box (those on
        # its edge either way)
        b.drag(geometry["box"][:2], geometry["box"][2:])
        b.wait_for("window.sprayState.selected.size > 0")
        selected = b.eval("Array.from(window.sprayState.selected).sort((a, b) => a - b)")
        assert set(geometry["clear"]) <= set(selected) <= set(geometry["inside"]), (selected, geometry)
        b.screenshot(SHOTS / "class-box-selection.png")
        b.eval("document.getElementById('export-csv').click()")
        rows = list(csv.DictReader(_downloaded(downloads, "class-00000000-selection.csv").open()))
        assert [r["id"] for r in rows] == [ids[i] for i in selected]
        # "select its images in the map" on the flagged cluster, then JSON export: exactly its finding's
        # samples (a local finding: its members)
        assert sorted(flagged["carriers"]) == sorted(flagged["members"])
        b.eval(f"document.querySelector('[data-select-finding=\"{flagged['id']}\"]').click()")
        b.wait_for(f"window.sprayState.selected.size === {len(flagged['carriers'])}")
        b.eval("document.getElementById('export-json').click()")
        exported = json.loads(_downloaded(downloads, "class-00000000-selection.json").read_text())
        assert sorted(s["id"] for s in exported["samples"]) == sorted(flagged["carriers"])
        assert all(s["flagged"] and s["in_finding"] and s["cluster"] == flagged["id"] for s in exported["samples"])
        # other k and colour by suspicion redraw
        b.eval("{ const k = document.getElementById('k'); k.value = '3'; k.dispatchEvent(new Event('change')); }")
        assert b.wait_for("document.getElementById('map').data.length") == 3
        b.eval("{ const c = document.getElementById('colour'); c.value = 'score'; c.dispatchEvent(new Event('change')); }")
        assert b.wait_for("document.getElementById('map').data.length") == 1
        b.screenshot(SHOTS / "class-full.png", full_page=True)


@needs_browser
def test_index_ranks_filters_and_links_every_class(demo_run, tmp_path):
    assert CHROMIUM, "CI must have Chromium (.ci/run installs Debian's chromium)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    index = demo_run / "report" / "index.html"
    summary = json.loads((demo_run / "report" / "summary.json").read_text())
    with Browser(tmp_path / "profile", 1280, 1000) as b:
        b.goto(index.as_uri())
        b.wait_for("document.body.dataset.ready === 'index'")
        rows = b.eval("[...document.querySelectorAll('#classes tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert len(rows) == len(summary["classes"]) and rows[0][0] == "1" and rows[0][1].startswith("0")
        assert int(rows[0][0]) == 1 and rows[0][4] == "1"                                  # class 0, cluster 1 flagged
        links = b.eval("[...document.querySelectorAll('#classes a')].map(a => a.getAttribute('href'))")
        assert sorted(links) == sorted(f"class-{c['label']:08d}/index.html" for c in summary["classes"])
        assert all((index.parent / link).is_file() for link in links)
        b.eval("{ const f = document.getElementById('filter'); f.value = '7'; f.dispatchEvent(new Event('input')); }")
        assert b.eval("document.querySelectorAll('#classes tbody tr').length") == 1
        b.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));"
               "const o = document.getElementById('flagged-only'); o.checked = true; o.dispatchEvent(new Event('change')); }")
        assert b.eval("document.querySelectorAll('#classes tbody tr').length") == 1
        finding = b.eval("document.getElementById('finding-1').textContent")
        assert "class 0" in finding and "Flip test" in finding and "Hot spot: rows 24-" in finding  # the stamp's rows
        assert b.eval("document.documentElement.scrollWidth <= window.innerWidth")
        b.screenshot(SHOTS / "index.png", full_page=True)


@needs_browser
def test_index_of_1000_classes_is_ranked_and_paged(tmp_path):
    """The scale helper's ``attention`` record orders unflagged classes; 1000 rows page by 50."""
    assert CHROMIUM, "CI must have Chromium (.ci/run installs Debian's chromium)"
    rows = [{"label": i, "name": f"class-{i}", "href": f"class-{i:08d}/index.html", "n": 50, "k": 2,
             "flagged": [1] if i in (500, 7) else [], "flag_score": 0.3 + i / 10000 if i in (500, 7) else None,
             "top_score": 0.1, "why": f"evidence {i}", "attention": {"score": 1 - i / 1000, "rank": 1000 - i}}
            for i in range(1000)]
    run = {"name": "scale", "samples": 50000, "n_classes": 1000, "accuracy_words": "a", "composite_words": "b",
           "created": "now", "threshold": 0.2, "store": "s", "has_attention": True}
    index = write_index(tmp_path, run, [], rank_classes(rows), 0, [])
    with Browser(tmp_path / "profile") as b:
        b.goto(index.as_uri())
        b.wait_for("document.body.dataset.ready === 'index'")
        first = b.eval("[...document.querySelectorAll('#classes tbody tr')].map(r => r.cells[1].textContent.split(' ')[0])")
        assert len(first) == 50 and first[:3] == ["class-500", "class-7", "class-999"]
        assert b.eval("document.getElementById('page-info').textContent").startswith("page 1 of 20")
        for _ in range(19):
            b.eval("document.getElementById('next').click()")
        last = b.eval("[...document.querySelectorAll('#classes tbody tr')].map(r => r.cells[1].textContent.split(' ')[0])")
        assert last[-1] == "class-0" and b.eval("document.getElementById('next').disabled")
        b.eval("{ const f = document.getElementById('filter'); f.value = 'class-12'; f.dispatchEvent(new Event('input')); }")
        assert b.eval("document.querySelectorAll('#classes tbody tr').length") == 11   # 12, 120-129


def test_index_ranking_puts_flags_first_then_attention():
    rows = [{"label": 0, "flagged": [], "flag_score": None, "top_score": 0.1, "attention": {"rank": 2}},
            {"label": 1, "flagged": [1], "flag_score": 0.3, "top_score": 0.3},
            {"label": 2, "flagged": [], "flag_score": None, "top_score": 0.15, "attention": {"rank": 1}},
            {"label": 3, "flagged": [0], "flag_score": 0.5, "top_score": 0.5},
            {"label": 4, "flagged": [], "flag_score": None, "top_score": 0.19}]
    assert [r["label"] for r in rank_classes(rows)] == [3, 1, 2, 0, 4]
    assert [r["rank"] for r in rows] == [4, 2, 3, 1, 5]


def test_a_finding_the_flip_test_confirmed_ranks_above_a_higher_scored_one_it_did_not():
    rows = [{"label": 0, "flagged": [2], "flag_score": 0.10, "top_score": 0.10, "confirmed": False},
            {"label": 1, "flagged": [0], "flag_score": 0.07, "top_score": 0.07, "confirmed": True},
            {"label": 2, "flagged": [], "flag_score": None, "top_score": 0.04}]
    assert [r["label"] for r in rank_classes(rows)] == [1, 0, 2]
    groups = [Group(4, np.arange(0, 10), 0.10, True, confirmed=False),      # a dark corner, refuted
              Group(4, np.arange(10, 40), 0.07, True, confirmed=True)]      # the background, confirmed
    labels, truth = np.full(40, 4), np.array([""] * 10 + ["background"] * 30)
    verdict = judge(labels, truth, {"background": 4}, groups, np.r_[np.zeros(10), np.ones(30)])
    found = verdict.shortcuts["background"]
    assert found.rank == 1 and found.ranked_first and verdict.false_flags == 1 and verdict.false_confirmed == 0
    untested = [Group(g.label, g.rows, g.score, g.flagged) for g in groups]   # no flip test: by score alone
    assert not judge(labels, truth, {"background": 4}, untested, np.ones(40)).shortcuts["background"].ranked_first


def test_words_for_the_numbers():
    assert words.box([24, 2, 30, 12], (32, 32), "the lower-left corner") == (
        "rows 24-29 and columns 2-11 of the 32x32-pixel input (a 6x10-pixel patch, the lower-left corner)")
    entry = {"n": 500, "rate": 0.55, "method": "paste region", "control": "same region, other samples of the class",
             "control_rate": 0.02, "confirmed": True}
    text = words.flip(entry, "0", True, True)
    assert "turns 55% of them into class 0" in text and "(same region, other samples of the class) turns 2%" in text
    assert "confirmed, the model uses" in text
    assert "not confirmed" in words.flip({**entry, "confirmed": False}, "0", True, True)
    assert "background" in words.flip({**entry, "method": "swap background"}, "0", True, True)
    assert words.flip(None, "0", True, False).startswith("Not verified")
    assert "zB" in words.composite({"preset": "epsilon_gamma_box", "low": [-1], "high": [1]})
    assert "by layer type: Conv2d -> gamma (gamma=0.5)" in words.composite(
        {"preset": "epsilon", "by_type": {"Conv2d": {"rule": "gamma", "gamma": 0.5}}})
    gap = words.eigengap(2, 0.96, 3, 0.33, [0.0, 0.006, 0.15])
    assert "k = 2 groups" in gap and "eigenvalue 3 is 0.150" in gap and "clean split" in gap


@needs_browser
def test_select_finding_selects_its_carriers_where_they_are_not_its_members(demo_run, tmp_path):
    """A background finding is carried by the look-alike group around its cluster, not by its
    members: the page's "select its N images" button, its JSON export and review.csv follow the
    carriers (here: two members left out, three samples of other clusters added)."""
    import pandas as pd
    from spray.report import write_report
    analysis = tmp_path / "analysis"
    shutil.copytree(demo_run / "analysis", analysis)
    summary = json.loads((analysis / "analysis.json").read_text())
    rec = next(r for r in summary["classes"] if r["label"] == 0)
    flagged = next(c for c in rec["clusters"] if c["flagged"])
    others = [i for c in rec["clusters"] if c is not flagged for i in c["members"]]
    flagged["carriers"] = flagged["members"][2:] + others[:3]
    (analysis / "analysis.json").write_text(json.dumps(summary))
    verification = json.loads((analysis / "verification.json").read_text())
    index = write_report(demo_run / "store", analysis, tmp_path / "report", verification)
    page = index.parent / "class-00000000" / "index.html"
    review = pd.read_csv(index.parent / "review.csv")
    assert sorted(review.loc[review["class"] == 0, "id"]) == sorted(flagged["carriers"])
    downloads = tmp_path / "downloads"
    with _class_page(page, tmp_path, downloads) as b:
        button = f"document.querySelector('[data-select-finding=\"{flagged['cluster']}\"]')"
        assert f"select its {len(flagged['carriers'])} images" in b.eval(f"{button}.textContent")
        b.eval(f"{button}.click()")
        b.wait_for(f"window.sprayState.selected.size === {len(flagged['carriers'])}")
        b.eval("document.getElementById('export-json').click()")
        exported = json.loads(_downloaded(downloads, "class-00000000-selection.json").read_text())
    samples = {s["id"]: s for s in exported["samples"]}
    assert sorted(samples) == sorted(flagged["carriers"])
    assert all(s["in_finding"] for s in samples.values())
    assert not any(samples[i]["flagged"] for i in others[:3])        # carriers from unflagged clusters
    assert all(samples[i]["flagged"] for i in flagged["members"][2:])
