"""Every browse surface shows the schema-2 fields truthfully: `show`, `list`, `compare`, `diff`, the
Markdown catalogue and the HTML site.

The recipes live in a private catalogue (a minimal registry and two test recipes), so that recipes
and registry files being edited elsewhere cannot break these tests. `newfields-a` uses every new
field: explicit `unknown` values (tokens, batch, schedule), numbers as the paper prints them,
errata, a side branch started part-way through the first stage, optimizer-state carry/reset, depth
up-scaling, FIM, a batch ramp, a within-stage mixture ramp, µP/Muon/QK-Clip/AdEMAMix settings,
NTK-alpha scaling, a per-layer attention layout and an intermediate-checkpoint result.
`newfields-b` changes some of them and adds a main-line long-context stage, so that `diff` must
pair the side branches with each other and not with that stage.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midtrain.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

MODELS = """\
olmo-2-1124-7b:
  description: OLMo 2 7B after stage 1 pre-training
  family: olmo2
  hub_id: allenai/OLMo-2-1124-7B
  config_class: Olmo2Config
  parameters: 7.30B
  vocab_size: 100352
  context_length: 4096
  rope_theta: 500000
  license: Apache-2.0
  layers: 32
  hidden_size: 4096
  tiny: {hidden_size: 128, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4, intermediate_size: 384}
"""

SOURCES = """\
dolmino-dclm: {description: web text, category: web, license: ODC-BY, approx_tokens: 752B, builtin: prose}
dolmino-math: {description: math, category: math, format: short-cot, license: ODC-BY, approx_tokens: 10.7B, builtin: math}
llama3-anneal-code: {description: code, category: code, format: code, license: proprietary, builtin: code}
"""

RECIPE_A = """\
schema_version: 2
id: newfields-a
title: New fields A - every schema-2 field in one recipe
organization: Test Lab
family: olmo2
parameters: 7B
architecture: dense decoder, 32 layers
source: {title: A paper, url: "https://example.org/paper", year: 2025}
objectives: [math, code, long-context]
techniques: [muon, qk-clip, fim, depth-upscaling, branching, batch-ramp]

base: {model: olmo-2-1124-7b, context_length: 4096, rope_theta: 500000, lr_at_end: 6.0e-5}

optimizer:
  type: muon
  weight_decay: 0.1
  muon: {momentum: 0.95, ns_steps: 5, rms_match: 0.2}
  qk_clip: {tau: 100}
  mup: {base_width: 256, multipliers: {embedding: 10.0}}

attention: {pattern: [sliding, sliding, sliding, full], layers: 32, last: full, sliding_window: 4096, local_rope_theta: 10000}

stages:
  - name: stable
    kind: continued-pretraining
    init: base
    tokens: 100B
    sequence_length: 4096
    optimizer_state: reset
    upscale: {from_layers: 24, segments: [[0, 16], [8, 24]]}
    batch:
      sequences: 1024
      ramp:
        - {sequences: 2048, after_tokens: 20B}
        - {sequences: 4096, when: the loss plateaus}
    fim:
      rate: 0.5
      spm_rate: 0.5
      tokens: {prefix: "<PRE>", middle: "<MID>", suffix: "<SUF>"}
      applies_to: [llama3-anneal-code]
    schedule: {type: wsd, peak_lr: 3.0e-4, decay_fraction: 0.1}
    mixture:
      components:
        - {source: dolmino-dclm, share: 0.7, share_end: 0.5}
        - {source: llama3-anneal-code, share: 0.3, share_end: 0.5}
  - name: long-ctx
    kind: long-context
    branch: true
    init: stable
    init_at: {tokens: 50B}
    tokens: 20B
    sequence_length: 32768
    batch: unknown
    rope: {theta: 1000000, scaling: {type: ntk-alpha, alpha: 8}}
    schedule: {type: constant, lr: 1.0e-5}
    mixture: {components: [{source: dolmino-dclm, share: 1.0}]}
  - name: anneal
    kind: anneal
    tokens: unknown
    steps: 1000
    sequence_length: 4096
    batch: {sequences: 1024}
    optimizer_state: carry
    optimizer: {type: ademamix, ademamix: {alpha: 8, beta3: 0.9999, warmup_steps: 500}}
    rope: {theta: 2000000}
    schedule: {type: unknown, shape: linear}
    mixture:
      components:
        - {source: dolmino-math, share: 0.6}
        - {source: dolmino-dclm, share: 0.4}

results:
  - {benchmark: GSM8K, before: 40, after: 50, where: Table 2}
  - {benchmark: MATH, after: 30, at: {stage: stable, tokens: 50B}, where: Fig. 3}

reported:
  - {path: "stages[anneal].steps", value: 1024, cite: "§2.5", why: "1,024 steps of 4M tokens is 4.3B, not the 4.2B stated"}
  - {path: source.year, value: 2024, cite: arXiv v1, why: v2 of the paper is from 2025}

revisions:
  - {path: "stages[stable].tokens", old: 9.0e10, new: 1.0e11, where: config fix PR 12, date: 2025-01-02, note: the first config stopped early}

provenance:
  parameters: "stated: §1"
  stages[stable].tokens: "stated: §2"
  stages[anneal].steps: "stated: Table 1"
  stages[anneal].tokens: "assumed: the paper gives only steps"
  stages[long-ctx].init_at: "stated: §3 (branch at 50B)"
  optimizer.qk_clip.tau: "stated: §2.1"
"""

ANNEAL_TOKENS = 1000 * 1024 * 4096  # steps × sequences × sequence length


def recipe_b() -> str:
    """A with another QK-Clip τ, FIM rate and mixture ramp, a main-line long-context stage, the side
    branch renamed, and the anneal's optimizer state reset instead of carried."""
    text = RECIPE_A.replace("newfields-a", "newfields-b").replace("New fields A", "New fields B")
    for old, new in (
        ("qk_clip: {tau: 100}", "qk_clip: {tau: 30}"),
        ("      rate: 0.5\n", "      rate: 0.9\n"),
        ("share: 0.7, share_end: 0.5", "share: 0.7, share_end: 0.6"),
        ("share: 0.3, share_end: 0.5", "share: 0.3, share_end: 0.4"),
        ("optimizer_state: carry", "optimizer_state: reset"),
        ("stages[long-ctx]", "stages[ext]"),
        (
            "  - name: long-ctx\n",
            "  - name: lc-main\n    kind: long-context\n    tokens: 5B\n    sequence_length: 16384\n"
            "    schedule: {type: constant, lr: 2.0e-5}\n    mixture: {components: [{source: dolmino-dclm, share: 1.0}]}\n"
            "  - name: ext\n",
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "registry").mkdir(parents=True)
    (root / "recipes" / "test").mkdir(parents=True)
    (root / "registry" / "models.yaml").write_text(MODELS, encoding="utf-8")
    (root / "registry" / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    shutil.copy(ROOT / "registry" / "scales.yaml", root / "registry" / "scales.yaml")
    (root / "recipes" / "test" / "newfields-a.yaml").write_text(RECIPE_A, encoding="utf-8")
    (root / "recipes" / "test" / "newfields-b.yaml").write_text(recipe_b(), encoding="utf-8")
    monkeypatch.setenv("MIDTRAIN_HOME", str(root))
    return root


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def line_with(text: str, *fragments: str) -> str:
    """The one output line that contains every fragment, without the panel's borders."""
    lines = [line.strip("│ ") for line in text.splitlines() if all(f in line for f in fragments)]
    assert len(lines) == 1, (fragments, lines)
    return lines[0]


def squash(text: str) -> str:
    return " ".join(text.split())


def test_show_prints_every_new_field(catalogue: Path) -> None:
    out = run("show", "newfields-a")
    # identity: attention layout, the main line and its total (the branch left out), unknowns
    assert "3 sliding : 1 full per 4 layers, window 4,096, last layer full, local θ 10,000" in out
    assert "32 layers: 24 sliding, 8 full" in out
    assert "stable 100B → anneal 4.19B = 104B" in line_with(out, "main line ")
    assert "⑂ long-ctx 20B, from stable at 50B tokens · not in the totals (20B in all)" in out
    assert "final model    anneal" in out
    assert (
        "3 values the sources do not give: stages[long-ctx].batch, stages[anneal].tokens, stages[anneal].schedule"
        in out
    )
    # optimizer: µP, Muon, QK-Clip (its τ stated), AdEMAMix on the anneal
    optimizer = line_with(out, "optimizer  muon")
    assert "µP base width 256· embedding ×10·" in optimizer
    assert "Muon momentum 0.95· Nesterov yes□ Newton-Schulz steps 5· update RMS 0.2·" in optimizer
    assert "QK-Clip τ 100● α 0.5□" in optimizer
    assert "AdEMAMix α 8· β3 0.9999· warmup steps 500·" in line_with(out, "ademamix")
    # unknown values: styled words, never numbers; a stated count beside the number the paper prints
    budget = line_with(out, "budget", "steps")
    assert budget.startswith("budget                 unknown○ tokens (≈ 4.19B from steps × batch)")
    assert "1,000● steps (paper prints 1024, §2.5: 1,024 steps of 4M tokens is 4.3B, not the 4.2B stated)" in budget
    assert "batch                  unknown" in out.replace("│", "")
    schedule = line_with(out, "schedule", "the paper says")
    assert (
        "unknown (the paper says linear) → plan fills in a flagged default: from the base's LR, linear → 0 (base LR 6e-05)"
        in schedule
    )
    # batch ramp, FIM, up-scaling, optimizer state, mixture ramp
    ramp = line_with(out, "batch ramp")
    assert "→ 2,048 sequences (8.39M tokens/step) after 20B tokens·" in ramp and "when the loss plateaus" in ramp
    fim = line_with(out, "FIM")
    assert (
        "rate 0.5· · SPM 0.5· of those (the rest PSM) · document□ level · <PRE> <MID> <SUF> · on llama3-anneal-code"
        in fim
    )
    assert "24 → 32 layers: [0, 16) + [8, 24) of the 24" in line_with(out, "depth up-scaling")
    assert "reset (starts fresh)" in out and "carried over from stable" in out
    assert "→ at end" in out and re.search(r"dolmino-dclm\s+█+▌?\s+70\.0%·\s+→\s+50\.0%·", out)
    # RoPE: NTK-alpha on the branch; the anneal's θ change is read from stable, not from the branch above it
    assert "θ 500,000 → 1,000,000 (ABF ×2); NTK-aware α 8" in out
    assert "θ 500,000 → 2,000,000 (ABF ×4)" in out
    # the branch: titled and placed after the main line, its branch point marked, not in the totals
    assert "stage 2: long-ctx (long-context) ⑂ side branch of stable" in out
    assert out.index("stage 3: anneal") < out.index("stage 2: long-ctx")
    assert "side branch of stable at 50B tokens● (not in the totals)" in out
    assert "⑂ side branch: not in the totals" in line_with(out, "share of mid-training", "⑂")
    assert "stable (the main line: the side branch above is skipped)" in out
    # results at an intermediate checkpoint, numbers printed elsewhere, errata
    assert "intermediate: stable at 50B tokens" in line_with(out, "MATH")
    assert "• source.year: paper prints 2024, arXiv v1: v2 of the paper is from 2025" in out
    assert "100B● tokens (✎ was 90B until config fix PR 12)" in out and "Errata (values corrected upstream)" in out
    assert re.search(r"stages\[stable\]\.tokens\s+90B\s+100B\s+config fix PR 12\s+2025-01-02", out)


def test_lineage_follows_init_through_branches(catalogue: Path) -> None:
    from midtrain.cli.common import load_catalog
    from midtrain.lineage import init_index, theta_at_end, theta_at_start

    recipe = load_catalog().get("newfields-a")
    assert [recipe.init_of(i) for i in range(3)] == ["base", "stable", "stable"]
    assert init_index(recipe, 2) == 0  # `previous` skips the side branch
    assert theta_at_end(recipe, 1) == 1_000_000 and theta_at_start(recipe, 2) == 500_000


def test_list_counts_unknowns_errata_and_leaves_branches_out(catalogue: Path) -> None:
    rows = {row["id"]: row for row in json.loads(run("list", "--json"))}
    a = rows["newfields-a"]
    assert a["stages"] == 2 and a["branches"] == 1 and a["branch_tokens"] == 20e9
    assert a["total_tokens"] == a["mid_training_tokens"] == 100e9 + ANNEAL_TOKENS  # the 20B branch is not in them
    assert a["unknowns"] == 3 and a["revisions"] == 1 and a["reported"] == 2
    assert rows["newfields-b"]["total_tokens"] == 105e9 + ANNEAL_TOKENS
    table = line_with(run("list"), "newfields-a")
    assert "2+1⑂" in table and "104B" in table and "3? 1✎" in table


def test_totals_exclude_a_branch(catalogue: Path) -> None:
    """Dropping the side branch changes no total; only branch tokens."""
    recipes = catalogue / "recipes" / "test"
    text = RECIPE_A.replace("newfields-a", "no-branch")
    start, end = text.index("  - name: long-ctx"), text.index("  - name: anneal")
    text = text[:start] + text[end:]
    text = text.replace('  stages[long-ctx].init_at: "stated: §3 (branch at 50B)"\n', "")
    (recipes / "no-branch.yaml").write_text(text, encoding="utf-8")
    rows = {row["id"]: row for row in json.loads(run("list", "--json"))}
    with_branch, without = rows["newfields-a"], rows["no-branch"]
    for key in ("total_tokens", "mid_training_tokens", "stages"):
        assert with_branch[key] == without[key], key
    assert without["branch_tokens"] == 0 and with_branch["branch_tokens"] == 20e9
    compared = json.loads(run("compare", "newfields-a", "no-branch", "--json"))["rows"]
    assert compared["total_tokens"][0] == compared["total_tokens"][1] == "104B"
    assert compared["stages"][0] == compared["stages"][1] == "stable (100B) → anneal (4.19B)"


def test_compare_rows(catalogue: Path) -> None:
    rows = json.loads(run("compare", "newfields-a", "newfields-b", "--json"))["rows"]
    assert rows["total_tokens"] == ["104B", "109B"] and rows["mid_training_tokens"] == ["104B", "109B"]
    assert rows["branches"] == ["long-ctx (20B from stable at 50B tokens)", "ext (20B from stable at 50B tokens)"]
    assert rows["unknowns"] == [3, 3] and rows["errata"] == [1, 1]
    assert rows["rope"][0] == "unchanged | θ 500,000 → 2,000,000 (ABF ×4)"  # θ from stable, the branch skipped
    assert rows["lr_start"][0].endswith("unknown")
    text = run("compare", "newfields-a", "newfields-b")
    assert "stable (100B) → lc-main (5B) → anneal (4.19B)" in text


def test_diff_pairs_branches_with_branches_and_diffs_new_fields(catalogue: Path) -> None:
    result = json.loads(run("diff", "newfields-a", "newfields-b", "--json"))
    pairs = {(s["a"], s["b"]): s.get("paired_by") for s in result["stages"]}
    assert pairs[("long-ctx", "ext")] == "kind"  # not with lc-main, a main-line long-context stage
    assert pairs[(None, "lc-main")] is None
    by_pair = {(s["a"], s["b"]): s for s in result["stages"]}
    stable = {c["field"]: c for c in by_pair[("stable", "stable")]["changes"]}
    assert stable["fim"]["a"].startswith("rate 50%") and stable["fim"]["b"].startswith("rate 90%")
    assert "dolmino-dclm 70% → 50%" in stable["mixture_ramp"]["a"] and "70% → 60%" in stable["mixture_ramp"]["b"]
    anneal = {c["field"]: c for c in by_pair[("anneal", "anneal")]["changes"]}
    assert anneal["optimizer_state"]["a"] == "carried over from stable"
    assert anneal["optimizer_state"]["b"] == "reset (starts fresh)"
    overview = {row["field"]: row for row in result["overview"]}
    assert "QK-Clip τ 100" in overview["optimizer"]["a"] and "QK-Clip τ 30" in overview["optimizer"]["b"]
    assert overview["stages"]["a"] == 2 and overview["stages"]["b"] == 3
    assert (
        "total tokens (all stages)" not in overview
        and overview["total tokens (main line)"]["a"] == 100e9 + ANNEAL_TOKENS
    )
    text = run("diff", "newfields-a", "newfields-b")
    assert "stage 2: long-ctx → 3: ext (paired by same kind) ⑂ side branch" in text


def test_markdown_catalogue(catalogue: Path) -> None:
    text = run("catalog", "markdown")
    row = line_with(text, "[newfields-a](#newfields-a)")
    assert row.startswith("| [newfields-a](#newfields-a) ✎ 1 |") and "| 2 + 1 ⑂ (20B) | 104B | 104B |" in row
    assert "| 3 |" in row  # unknown values
    assert "side branches (⑂" in text.lower()
    assert "| ⑂ long-ctx: side branch of stable at 50B tokens, not in the totals | long-context | 20B × 1 |" in text
    assert "| anneal | anneal | unknown (≈4.19B from steps) × 1 |" in text
    assert "unknown (the paper says linear); plan fills in a flagged default" in text
    assert "Attention: 3 sliding : 1 full per 4 layers" in text and "QK-Clip τ 100, α 0.5" in text
    assert "*FIM* rate 50%, SPM 50% of those" in text and "*depth up-scaling* 24 → 32 layers" in text
    assert "*batch* unknown" in text and "then 2,048 sequences (8.39M tokens/step) after 20B tokens" in text
    assert "*optimizer* ademamix" in text and "AdEMAMix α 8, β3 0.9999, warmup 500 steps" in text
    assert (
        "Unknown (not given by the sources): `stages[long-ctx].batch`, `stages[anneal].tokens`, `stages[anneal].schedule`."
        in text
    )
    assert "- `stages[anneal].steps`: paper prints 1024, §2.5:" in text
    assert (
        "### Errata" in text
        and "- ✎ stages[stable].tokens: 90B → 100B (config fix PR 12, 2025-01-02); the first config stopped early"
        in text
    )


def test_html_site(catalogue: Path, tmp_path: Path) -> None:
    run("catalog", "build", str(tmp_path / "site"))
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    row = next(r for r in index.split("<tr ") if "newfields-a.html" in r)
    assert "class=errata-mark" in row and "+1 ⑂" in row and "<span class=unknown>3</span>" in row
    assert "<td data-v='104194304000.0'>104B</td>" in row
    page = (tmp_path / "site" / "newfields-a.html").read_text(encoding="utf-8")
    assert "<p class=attention>Attention layout: 3 sliding : 1 full per 4 layers" in page
    assert "QK-Clip τ 100, α 0.5" in page and "Muon momentum 0.95" in page
    assert "Main line: stable 100B → anneal 4.19B = 104B." in page
    assert "⑂ Side branches, not in the totals: long-ctx 20B from stable at 50B tokens, 20B in all" in page
    headings = re.findall(r"<h3 class=stage>(.*?)</h3>", page)
    assert [re.sub(r"<[^>]+>", "", h) for h in headings] == [
        "1. stable (continued-pretraining)",
        "3. anneal (anneal)",
        "2. long-ctx (long-context) ⑂ side branch of stable, not in the totals",
    ]
    assert "<span class=unknown>unknown</span> tokens (≈4.19B from steps), 1,000 steps" in page
    assert "<span class=unknown>schedule unknown</span> (the paper says linear); plan fills in" in page
    assert "<li><strong>batch</strong>: <span class=unknown>unknown</span></li>" in page
    assert "<th>share at the end</th>" in page and "<td class=num>→ 50.0%</td>" in page
    assert "rate 50%, SPM 50% of those" in page and "24 → 32 layers" in page and "reset (starts fresh)" in page
    assert "intermediate: stable at 50B tokens" in page and page.count("<tr class=result") == 2
    assert page.count("<li><code>stages[") == 3 + 1  # three unknowns, one reported number
    assert "<h2>Errata</h2>" in page and "<tr class=erratum>" in page and "config fix PR 12" in page
    # the LR plot: three curves, the unknown schedule dashed as plan's default, the branch last and marked
    assert page.count("class=lr-stage") == 3 and 'stroke-dasharray="8 5"' in page
    labels = [squash(t) for t in re.findall(r"<text class=stage-label[^>]*>([^<]*)", page)]
    assert [label.split(" (")[0] for label in labels] == ["1. stable", "3. anneal", "2. ⑂ long-ctx"]
    assert "starts from stable at 50B tokens (side branch, not in the totals)" in page
