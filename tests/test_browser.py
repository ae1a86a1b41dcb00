"""The static HTML catalogue in a real browser (Debian's headless Chromium): the table filters, pages load."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from midtrain.catalog import load_catalog
from midtrain.publish import build_site

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`make test` installs Debian's chromium as root)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=3000"]


def browse(url: str, profile: Path, *extra: str) -> str:
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True, text=True, timeout=120)
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
    assert "<polyline" in dom and "dolmino-math" in dom and "Table 13" in dom and "class=\"bar\"" in dom
    shot = tmp_path / "page.png"
    browse(f"file://{site}/olmo-2-1124-7b.html", tmp_path / "p5", f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.exists() and shot.stat().st_size > 10_000
