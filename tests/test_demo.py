"""The main job end to end at CI size, and its report checked in a real headless browser."""
import json
import os
import re
import shutil
import subprocess

import pytest

from spray.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const width = window.innerWidth;
  const wide = [...document.querySelectorAll('table, figure, img, .card, p, h1')]
    .filter(e => e.getBoundingClientRect().right > width + 1).map(e => e.tagName);
  document.title = 'CHECK ' + JSON.stringify({images: imgs.length, broken: broken, wide: wide,
                                              scroll: document.documentElement.scrollWidth, width: width});
});
</script>"""


def test_demo_flags_the_watermark_first_and_not_the_harmless_class(demo_run, capsys):
    summary = json.loads((demo_run / "report" / "summary.json").read_text())
    first = summary["flagged"][0]
    assert first["class"] == 0 and first["flip_rate"] > 0.3
    classes = {c["label"]: c for c in summary["classes"]}
    assert not any(cl["flagged"] for cl in classes[7]["clusters"])  # the harmless second strategy
    assert not any(cl["flagged"] for cl in classes[1]["clusters"])  # the control class
    index = (demo_run / "report" / "index.html").read_text()
    assert index.index("lower-left corner") < index.index("Classes")
    for c in classes.values():
        for cl in c["clusters"]:
            assert {"id", "size", "members", "score", "flagged", "reason", "hot_spot_box", "flip_rate"} <= set(cl)
    folder = demo_run / "report" / "class-00000000"
    assert (folder / "clusters.csv").read_text().startswith("cluster,size,share,score,flagged")
    for name in ("spectrum.png", "scatter.png", "prototypes.png", "cluster-0.png", "summary.json"):
        assert (folder / name).stat().st_size > 1000, name
    # idempotent: a second run reuses every stage
    assert main(["demo", "--small", "--out", str(demo_run), "--quiet"]) == 0
    stages = json.loads((demo_run / "stages.json").read_text())
    assert set(stages) == {"explain", "analyze", "verify", "report"}


def _browser(page, screenshot):
    checked = page.with_name(page.stem + ".check.html")
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    base = FLAGS + [f"--user-data-dir={screenshot.parent / 'chromium-profile'}", "--window-size=1280,1600"]
    dom = subprocess.run([CHROMIUM, *base, "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    subprocess.run([CHROMIUM, *base, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    checked.unlink()
    match = re.search(r"<title>CHECK (.*?)</title>", dom)
    assert match, dom[:500]
    return json.loads(match.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="Chromium not installed (.ci/run installs it; apt-get install chromium)")
def test_report_pages_render_in_a_real_browser(demo_run, tmp_path):
    assert CHROMIUM, "CI must have Chromium (.ci/run installs Debian's chromium)"
    for page in (demo_run / "report" / "index.html", demo_run / "report" / "class-00000000" / "index.html"):
        shot = tmp_path / (page.parent.name + ".png")
        result = _browser(page, shot)
        assert result["broken"] == [], result
        assert result["wide"] == [] and result["scroll"] <= result["width"], result
        assert shot.stat().st_size > 20_000
        if page.parent.name.startswith("class"):
            assert result["images"] >= 5
