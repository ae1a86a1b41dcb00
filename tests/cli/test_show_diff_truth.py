"""`show`, `diff` and `cp` tell the truth about every number (issue "Catalogue: every number true").

Each test names the behaviour it pins: line marks derived from sub-fields, schema defaults marked as
such, provenance bounds shown, θ changes read from the stage's `init`, full provenance paths,
context lengths in tokens (decimal and binary), diff stages paired by name and kind, and `cp`
writing a relative `$schema` and refusing file names that are not recipe ids.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from midtrain.cli import app
from midtrain.cli.common import load_catalog
from midtrain.lineage import theta_at_end, theta_at_start
from midtrain.recipe_diff import pair_stages
from midtrain.units import fmt_context

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def line_with(text: str, fragment: str) -> str:
    """The one output line that contains `fragment`, without the panel's borders."""
    lines = [line.strip("│ ") for line in text.splitlines() if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


def copy_recipe(tmp_path: Path, recipe_id: str, name: str, *edits: tuple[str, str]) -> Path:
    dest = tmp_path / f"{name}.yaml"
    run("cp", recipe_id, str(dest))
    text = dest.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    dest.write_text(text, encoding="utf-8")
    return dest


# ---------------------------------------------------------------- context lengths


@pytest.mark.parametrize(
    ("tokens", "short"),
    [
        (200_000, "200K"),  # decimal: it used to print as 195K (200,000 // 1024)
        (128_000, "128K"),  # a multiple of both 1,000 and 1,024: decimal wins (not 125K)
        (1_000_000, "1M"),
        (131_072, "128K"),  # binary, the power-of-two convention
        (4096, "4K"),
        (524_288, "512K"),
        (1_048_576, "1M"),
        (100_500, "100,500"),  # neither: written out
        (512, "512"),
    ],
)
def test_context_format_decimal_then_binary(tokens: int, short: str) -> None:
    assert fmt_context(tokens) == short


def test_context_of_200k_is_200k_in_show_and_list(tmp_path: Path) -> None:
    dest = copy_recipe(tmp_path, "qwen2.5-math-7b", "math-200k", ("sequence_length: 4096", "sequence_length: 200000"))
    out = run("show", str(dest)).stdout
    assert "200,000● (200K)" in line_with(out, "200,000") and "195K" not in out
    assert "4,096● (4K)" in out  # the base's context: binary

    from midtrain.cli.render import catalogue_table
    from midtrain.summary import list_row

    row = list_row(load_catalog().get("deepseek-v3"))
    console = Console(width=200, record=True)
    console.print(catalogue_table([row, {**row, "id": "wide-200k", "final_context": 200_000}], 200))
    table = console.export_text()
    assert "200K" in line_with(table, "wide-200k") and "195K" not in table
    assert "128K" in line_with(table, "deepseek-v3 ")


# ---------------------------------------------------------------- marks derived from sub-fields


def test_line_mark_is_derived_from_sub_field_provenance(tmp_path: Path) -> None:
    """deepseek-v2 tags rope.scaling.factor, .beta_fast, ... but not `rope` itself: the RoPE line was `·`."""
    rope = line_with(run("show", "deepseek-v2").stdout, "YaRN ×40")
    assert rope.endswith("●"), rope  # every number under stages[yarn-32k].rope is stated

    # one sub-field assumed: the line shows the weakest mark; one untagged: `·`
    entry = 'stages[yarn-32k].rope.scaling.beta_slow: "stated: §3.1.4 (α = 1); config beta_slow 1"'
    assumed = copy_recipe(
        tmp_path, "deepseek-v2", "v2-assumed", (entry, 'stages[yarn-32k].rope.scaling.beta_slow: "assumed: a test"')
    )
    assert line_with(run("show", str(assumed)).stdout, "YaRN ×40").endswith("○")
    untagged = copy_recipe(tmp_path, "deepseek-v2", "v2-untagged", ("  " + entry + "\n", ""))
    assert line_with(run("show", str(untagged)).stdout, "YaRN ×40").endswith("·")
    assert "weakest" in run("show", "deepseek-v2").stdout  # the rule is in the legend


# ---------------------------------------------------------------- schema defaults


def test_schema_defaults_are_marked_not_stated() -> None:
    """deepseek-v2 writes betas, weight decay and clip but not ε; OLMo 2 writes ε too."""
    opt = line_with(run("show", "deepseek-v2").stdout, "adamw β=")
    assert "ε=1e-08□" in opt and "wd=0.1●" in opt and "β=0.9,0.95●" in opt and "clip=1●" in opt
    assert "ε=1e-08●" in line_with(run("show", "olmo-2-1124-7b").stdout, "adamw β=")
    # a YaRN attention factor the file leaves to the schema's 0.1·ln s + 1
    assert "attention ×1.369□" in line_with(run("show", "deepseek-v2").stdout, "YaRN ×40")
    assert "□ schema default" in run("show", "deepseek-v2").stdout


# ---------------------------------------------------------------- bounds


def test_provenance_bounds_are_shown() -> None:
    assert "≈350B◐ tokens" in run("show", "hunyuan-large").stdout  # bound: approximate
    assert "≥1T○ tokens" in run("show", "qwen2.5-math-7b").stdout  # bound: lower ("over 1 trillion")
    assert "≈ about  ≥ at least  ≤ at most" in run("show", "hunyuan-large").stdout


# ---------------------------------------------------------------- θ follows init


def test_theta_change_follows_init() -> None:
    recipe = load_catalog().get("apertus-8b")  # θ 500K → 1M → 2M → 4M → 12M, each from the previous stage
    assert theta_at_start(recipe, 4) == 4_000_000 and theta_at_end(recipe, 4) == 12_000_000

    def starting_from(init: str):  # type: ignore[no-untyped-def]
        stages = [*recipe.stages[:4], recipe.stages[4].model_copy(update={"init": init})]
        return recipe.model_copy(update={"stages": stages})

    branched = starting_from("ctx-8k")  # branch from the 1M stage
    assert theta_at_start(branched, 4) == 1_000_000
    assert theta_at_start(starting_from("base"), 4) == 500_000

    from midtrain.cli.render import show

    console = Console(width=250, record=True)
    console.print(show(branched, load_catalog().registry, 250))
    assert "θ 1,000,000 → 12,000,000 (ABF ×12)" in console.export_text()


def test_theta_through_a_merge() -> None:
    """olmo-3-32b's long-context stage starts from a soup of the midtrain runs."""
    recipe = load_catalog().get("olmo-3-32b")
    assert recipe.stages[1].init == "midtrain-soup"
    assert theta_at_start(recipe, 1) == theta_at_end(recipe, 0) == recipe.base.rope_theta


# ---------------------------------------------------------------- provenance paths


def test_provenance_prints_full_names() -> None:
    table = run("show", "olmo-2-1124-7b", "--provenance").stdout
    assert "stages[anneal].mixture.components[dolmino-math].share" in table
    assert "stages[anneal].tokens" in table
    assert not re.search(r"^\s*stages\.", table, re.MULTILINE)  # Rich ate `[anneal]` as markup


# ---------------------------------------------------------------- diff pairing


def test_pair_stages_by_name_then_kind() -> None:
    def stages(*pairs: str) -> list:  # type: ignore[type-arg]
        return [SimpleNamespace(name=p.split(":")[0], kind=p.split(":")[1]) for p in pairs]

    a = stages("warm:anneal", "long:long-context", "math:capability")
    b = stages("long:long-context", "cool:anneal", "extra:reasoning")
    assert pair_stages(a, b) == [  # type: ignore[arg-type]
        (1, 0, "name"),
        (0, 1, "kind"),
        (None, 2, None),
        (2, None, None),
    ]


def test_diff_pairs_stages_by_name_and_kind() -> None:
    # by name: OLMo 2's only stage is an anneal; Llama 3.1 anneals last, after six long-context stages
    result = json.loads(run("diff", "olmo-2-1124-7b", "llama-3.1-405b", "--json").stdout)
    paired = [s for s in result["stages"] if "only_in" not in s]
    assert [(s["a"], s["b"], s["paired_by"]) for s in paired] == [("anneal", "anneal", "name")]
    added = [s["b"] for s in result["stages"] if s.get("status") == "added"]
    assert added == ["long-16k", "long-32k", "long-48k", "long-64k", "long-96k", "long-128k"]

    # by kind: InternLM2 (long-context, capability) against GLM-4.5 (capability, reasoning, long-context)
    result = json.loads(run("diff", "internlm2-7b", "glm-4.5", "--json").stdout)
    pairs = {(s["a"], s["b"]): s.get("paired_by") for s in result["stages"]}
    assert pairs[("long-context", "long-context-agent")] == "kind"
    assert pairs[("enhancement", "repo-code")] == "kind"
    assert pairs[(None, "synthetic-reasoning")] is None
    text = run("diff", "internlm2-7b", "glm-4.5").stdout
    assert "added: stage 2: synthetic-reasoning" in text and "paired by same kind" in text


# ---------------------------------------------------------------- cp


def test_cp_writes_a_relative_schema(tmp_path: Path) -> None:
    dest = tmp_path / "mine" / "olmo-more-math.yaml"
    run("cp", "olmo-2-1124-7b", str(dest))
    first = dest.read_text(encoding="utf-8").splitlines()[0]
    reference = first.removeprefix("# yaml-language-server: $schema=")
    assert reference != first and not os.path.isabs(reference), first
    assert (dest.parent / reference).resolve() == (ROOT / "docs" / "schema" / "recipe.schema.json").resolve()
    assert "1 recipe(s) valid" in run("validate", str(dest)).stdout


@pytest.mark.parametrize("name", ["My Recipe.yaml", "Olmo.yaml", "-dash.yaml", "olmo+math.yaml"])
def test_cp_refuses_a_file_name_that_is_not_an_id(tmp_path: Path, name: str) -> None:
    result = run("cp", "olmo-2-1124-7b", str(tmp_path / name), code=2)
    assert "DEST" in result.output and "not a valid recipe id" in result.output
    assert "expected: a recipe id" in result.output and f"found:    {Path(name).stem!r}" in result.output
    assert not (tmp_path / name).exists()
