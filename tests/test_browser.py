"""The static HTML catalogue in a real browser (Debian's headless Chromium): the table filters, pages load,
recipe pages show results, contradictions and notes, and the LR plot has axes and labelled stage boundaries."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from midtrain.catalog import load_catalog
from midtrain.publish import build_site

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (`make test` installs Debian's chromium as root)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
]


def browse(url: str, profile: Path, *extra: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def visible_rows(dom: str) -> list[str]:
    rows = re.findall(r"<tr data-objectives=\"([^\"]*)\"( hidden=\"\")?><td><a href=\"([^\"]+)\.html\"", dom)
    return [name for objectives, hidden, name in rows if not hidden]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(load_catalog(REPO), out)
    return out


def test_table_search_and_filter_in_a_browser(site: Path, tmp_path: Path) -> None:
    catalog = load_catalog(REPO)
    everything = visible_rows(browse(f"file://{site}/index.html", tmp_path / "p1", "--dump-dom"))
    assert sorted(everything) == sorted(catalog.recipes)
    searched = visible_rows(browse(f"file://{site}/index.html?q=qwen2.5", tmp_path / "p2", "--dump-dom"))
    assert sorted(searched) == sorted(i for i in catalog.recipes if "qwen2.5" in i)
    filtered = visible_rows(browse(f"file://{site}/index.html?objective=long-context", tmp_path / "p3", "--dump-dom"))
    expected = sorted(r.id for r in catalog.all() if any(o.value == "long-context" for o in r.objectives))
    assert sorted(filtered) == expected and 0 < len(expected) < len(catalog.recipes)


def test_recipe_page_in_a_browser(site: Path, tmp_path: Path) -> None:
    dom = browse(f"file://{site}/olmo-2-1124-7b.html", tmp_path / "p4", "--dump-dom")
    assert "<polyline" in dom and "dolmino-math" in dom and "Table 13" in dom and 'class="bar"' in dom
    shot = tmp_path / "page.png"
    browse(f"file://{site}/olmo-2-1124-7b.html", tmp_path / "p5", f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.exists() and shot.stat().st_size > 10_000


def text_of(fragment: str) -> str:
    """What a reader sees of a DOM fragment: tags and tooltips dropped, entities decoded, spaces collapsed."""
    fragment = re.sub(r"<title>.*?</title>", "", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("recipe_id", ["olmo-2-1124-7b", "llama-3.1-405b"])
def test_recipe_page_shows_results_contradictions_and_notes(site: Path, tmp_path: Path, recipe_id: str) -> None:
    """olmo-2-1124-7b: before → after rows; llama-3.1-405b: rows that report only the change."""
    recipe = load_catalog(REPO).get(recipe_id)
    assert recipe.results and recipe.contradictions and recipe.notes
    dom = browse(f"file://{site}/{recipe_id}.html", tmp_path / "p", "--dump-dom")
    rows = [text_of(row) for row in re.findall(r'<tr class="result"[^>]*>(.*?)</tr>', dom, re.S)]
    assert len(rows) == len(recipe.results)
    for row, result in zip(rows, recipe.results):
        assert squash(result.benchmark) in row and squash(result.where) in row and squash(result.model or "") in row
        if result.before is not None and result.after is not None:
            assert f"{result.before:g} → {result.after:g}" in row and f"{result.after - result.before:+.4g}" in row
        elif result.after is not None:
            assert f"not reported → {result.after:g}" in row and "after only" in row
        else:
            kind = {"absolute": "absolute", "relative": "relative", "unknown": "absolute or relative not stated"}[
                result.delta_kind
            ]
            assert f"{result.delta:+.4g}" in row and "change only" in row and kind in row
    blocks = [text_of(b) for b in re.findall(r'<div class="contradiction">(.*?)</div>', dom, re.S)]
    assert len(blocks) == len(recipe.contradictions)
    for block, item in zip(blocks, recipe.contradictions):
        assert all(path in block for path in item.about) and all(squash(source) in block for source in item.sources)
        assert f"Resolved: {squash(item.choice)}" in block
    notes = re.search(r'<p class="notes">(.*?)</p>', dom, re.S)
    assert notes and text_of(notes.group(1)) == squash(recipe.notes)
    page = text_of(dom)
    assert all(squash(stage.description) in page for stage in recipe.stages if stage.description)
    assert all(squash(stage.mixture.note) in page for stage in recipe.stages if stage.mixture.note)


def test_lr_plot_has_axes_and_one_labelled_boundary_per_stage(site: Path, tmp_path: Path) -> None:
    """DeepSeek-V3: a step-wise tail (2.2e-5 then 7.3e-6), then two 1,000-step extension stages at 7.3e-6."""
    recipe = load_catalog(REPO).get("deepseek-v3")
    assert len(recipe.stages) == 3
    dom = browse(f"file://{site}/deepseek-v3.html", tmp_path / "p", "--dump-dom")
    svg = re.search(r'<svg class="lr".*?</svg>', dom, re.S)
    assert svg, "no LR plot"
    svg = svg.group(0)

    def texts(cls: str) -> list[str]:
        return [text_of(t) for t in re.findall(rf'<text class="{cls}(?: [^"]*)?"[^>]*>(.*?)</text>', svg, re.S)]

    assert texts("stage-label") == ["1. lr-tail", "2. ctx-32k", "3. ctx-128k"]
    assert svg.count('class="stage-boundary"') == 3
    assert texts("y-tick") == ["0", "1e-5", "2e-5", "3e-5"]
    assert {"0", "100B", "500B", "563B", "626B"} <= set(texts("x-tick"))
    assert "tokens" in " ".join(texts("x-title")) and ">learning rate<" in svg
    assert texts("lr-value") == ["2.2e-5", "7.3e-6", "7.3e-6"]
    curves = [
        [tuple(map(float, p.split(","))) for p in points.split()]
        for points in re.findall(r'<polyline class="lr-stage"[^>]*points="([^"]+)"', svg)
    ]
    assert len(curves) == 3, "each stage is its own segment"
    tail_levels = sorted({y for _, y in curves[0]})
    assert len(tail_levels) == 2, "the tail is two constant steps"
    assert {y for _, y in curves[1]} == {y for _, y in curves[2]} == {tail_levels[1]}, (
        "both extensions at the tail's lower LR"
    )
    assert curves[0][-1][0] <= curves[1][0][0] < curves[1][-1][0] <= curves[2][0][0] < curves[2][-1][0], (
        "stages in order"
    )
    legend = [
        text_of(li)
        for li in re.findall(r"<li>(.*?)</li>", re.search(r'<ol class="lr-legend">(.*?)</ol>', dom, re.S).group(1))
    ]
    assert [item.split(":")[0].strip() for item in legend] == ["lr-tail", "ctx-32k", "ctx-128k"]
    shot = tmp_path / "deepseek-v3.png"
    browse(f"file://{site}/deepseek-v3.html", tmp_path / "p2", f"--screenshot={shot}", "--window-size=1200,1000")
    assert shot.exists() and shot.stat().st_size > 10_000


LAYOUT_CHECK = """
const problems = [];
const overlap = (a, b) => a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5;
for (const svg of document.querySelectorAll('svg.lr')) {
  const id = svg.closest('section').id, box = svg.viewBox.baseVal;
  const frame = svg.getBoundingClientRect(), scale = box.width / frame.width;
  const place = r => ({x: (r.x - frame.x) * scale, y: (r.y - frame.y) * scale, width: r.width * scale, height: r.height * scale});
  const texts = [...svg.querySelectorAll('text')].map(t => ({cls: t.getAttribute('class'), text: t.firstChild.nodeValue,
                                                            box: place(t.getBoundingClientRect())}));
  for (const t of texts)
    if (t.box.x < -0.5 || t.box.y < -0.5 || t.box.x + t.box.width > box.width + 0.5 || t.box.y + t.box.height > box.height + 0.5)
      problems.push(`${id}: "${t.text}" is cut off`);
  for (const [i, a] of texts.entries()) for (const b of texts.slice(i + 1))
    if (a.cls && a.cls === b.cls && overlap(a.box, b.box)) problems.push(`${id}: "${a.text}" overlaps "${b.text}"`);
  if (!svg.querySelectorAll('.stage-label').length) problems.push(`${id}: no stage labels`);
}
document.getElementById('problems').textContent = JSON.stringify(problems);
"""


def test_lr_plot_labels_are_legible_in_every_recipe(site: Path, tmp_path: Path) -> None:
    """Laid out by the browser: no label or tick of any recipe's plot is cut off or overlaps another of its kind."""
    catalog = load_catalog(REPO)
    head = (site / "deepseek-v3.html").read_text().split("<body>")[0]
    figures = []
    for recipe_id in sorted(catalog.recipes):
        figure = re.search(r"<figure class=lr-plot>.*?</figure>", (site / f"{recipe_id}.html").read_text(), re.S)
        assert figure, recipe_id
        figures.append(f"<section id='{recipe_id}'>{figure.group(0)}</section>")
    page = tmp_path / "layout.html"
    page.write_text(
        f"{head}<body>{''.join(figures)}<pre id=problems>not run</pre><script>{LAYOUT_CHECK}</script></body></html>"
    )
    dom = browse(f"file://{page}", tmp_path / "p", "--dump-dom")
    found = re.search(r'<pre id="problems">(.*?)</pre>', dom, re.S)
    assert found and found.group(1) != "not run"
    assert json.loads(html.unescape(found.group(1))) == []
