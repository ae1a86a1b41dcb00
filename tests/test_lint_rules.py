"""`midtrain lint`'s rules (on small recipes built here and on the real catalogue), its JSON, and the
README's generated catalogue counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from midtrain.catalog import load_catalog
from midtrain.cli import app
from midtrain.lint_rules import (
    COUNTS_END,
    COUNTS_START,
    RULES,
    Finding,
    anneal_without_decay,
    init_not_previous,
    lint_report,
    organisation,
    readme_with_counts,
    repeat_beyond_max_epochs,
    run_rules,
    stated_third_party_only,
    third_party_only,
)
from midtrain.schema.provenance import path_aliases
from midtrain.schema.recipe import Recipe

REPO = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(REPO)
REGISTRY = CATALOG.registry
SMALL = "dolmino-stackexchange"  # registry approx_tokens 1.26B
RULE_NAMES = [rule.name for rule in RULES]


def stage(name: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "kind": "anneal",
        "tokens": "1B",
        "sequence_length": 4096,
        "mixture": {"components": [{"source": "dolmino-dclm", "share": 1.0}]},
        "schedule": {"type": "linear", "start_lr": 1e-4, "end_lr": 0},
    }
    data.update(fields)
    return data


def recipe(*stages: dict[str, Any], **fields: Any) -> Recipe:
    data: dict[str, Any] = {
        "id": "synthetic",
        "title": "synthetic",
        "organization": "Lab (with friends)",
        "family": "llama",
        "parameters": "1B",
        "architecture": "dense",
        "source": {"title": "a paper", "year": 2025},
        "base": {"model": "olmo-2-1124-7b", "context_length": 4096, "lr_at_end": 1e-4},
        "objectives": ["math"],
        "stages": list(stages),
    }
    data.update(fields)
    return Recipe.model_validate(data)


def mixture(share: float, max_epochs: float | None = None) -> dict[str, Any]:
    small: dict[str, Any] = {"source": SMALL, "share": share}
    if max_epochs is not None:
        small["max_epochs"] = max_epochs
    return {"components": [small, {"source": "dolmino-dclm", "share": 1 - share}]}


# ---------------------------------------------------------------- repeat-beyond-max-epochs


def test_repeat_beyond_max_epochs_against_the_components_max() -> None:
    # 10B × 0.5 / 1.26B = 3.97 epochs of the small source
    found = repeat_beyond_max_epochs(recipe(stage("mid", tokens="10B", mixture=mixture(0.5, 2))), REGISTRY)
    assert [(f.recipe, f.stage, f.field) for f in found] == [
        ("synthetic", "mid", f"stages[mid].mixture.components[{SMALL}]")
    ]
    assert "3.97 epochs" in found[0].message and "max_epochs 2" in found[0].message
    assert not repeat_beyond_max_epochs(recipe(stage("mid", tokens="10B", mixture=mixture(0.5, 4))), REGISTRY)
    # within the tolerance for an approximate source size (3.97 vs 3.9 × 1.05)
    assert not repeat_beyond_max_epochs(recipe(stage("mid", tokens="10B", mixture=mixture(0.5, 3.9))), REGISTRY)


def test_repeat_beyond_the_default_when_no_max_is_given() -> None:
    many = recipe(stage("mid", tokens="30B", mixture=mixture(0.5)))  # 11.9 epochs
    assert [f.rule for f in repeat_beyond_max_epochs(many, REGISTRY)] == ["repeat-beyond-max-epochs"]
    assert "no max_epochs given" in repeat_beyond_max_epochs(many, REGISTRY)[0].message
    assert not repeat_beyond_max_epochs(recipe(stage("mid", tokens="20B", mixture=mixture(0.5))), REGISTRY)


def test_repeat_counts_one_run_and_skips_unknown_sizes() -> None:
    three_runs = stage("mid", tokens="10B", mixture=mixture(0.5, 4), runs={"count": 3})
    assert not repeat_beyond_max_epochs(recipe(three_runs), REGISTRY)  # each run is its own pass
    unsized = next(name for name, source in REGISTRY.sources.items() if source.approx_tokens is None)
    huge = stage("mid", tokens="100T", mixture={"components": [{"source": unsized, "share": 1.0}]})
    assert not repeat_beyond_max_epochs(recipe(huge), REGISTRY)
    no_budget = stage("mid", tokens=None, steps=1000, mixture=mixture(0.9, 0.001))  # no batch: tokens unknown
    assert not repeat_beyond_max_epochs(recipe(no_budget), REGISTRY)


# ---------------------------------------------------------------- init-not-previous


def test_init_not_previous_flags_an_unexplained_restart() -> None:
    found = init_not_previous(recipe(stage("a"), stage("b", init="base")), REGISTRY)
    assert [(f.stage, f.field) for f in found] == [("b", "stages[b].init")]
    assert "'base'" in found[0].message and "'a'" in found[0].message
    skip = recipe(stage("a"), stage("b"), stage("c", init="a"))
    assert [f.stage for f in init_not_previous(skip, REGISTRY)] == ["c"]


def test_init_from_the_previous_stage_or_its_soup_is_fine() -> None:
    assert not init_not_previous(recipe(stage("a", init="base"), stage("b")), REGISTRY)
    assert not init_not_previous(recipe(stage("a"), stage("b", init="a")), REGISTRY)
    soup = {"name": "soup", "method": "uniform", "inputs": [{"stage": "a"}]}
    assert not init_not_previous(
        recipe(stage("a", runs={"count": 2}), stage("b", init="soup"), merges=[soup]), REGISTRY
    )
    other = {"name": "mix", "method": "uniform", "inputs": [{"stage": "a"}, {"stage": "b"}]}
    found = init_not_previous(recipe(stage("a"), stage("b"), stage("c", init="mix"), merges=[other]), REGISTRY)
    assert [f.stage for f in found] == ["c"]


def test_init_elsewhere_with_a_reason_is_fine() -> None:
    said = stage("b", init="base", description="A second branch from the same checkpoint.")
    assert not init_not_previous(recipe(stage("a"), said), REGISTRY)
    cited = recipe(
        stage("a"),
        stage("b", init="base"),
        provenance={"stages[b].init": "assumed: the paper trains both anneals from the stage-1 checkpoint"},
    )
    assert not init_not_previous(cited, REGISTRY)


# ---------------------------------------------------------------- anneal-without-decay


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "constant", "lr": 1e-4},
        {"type": "constant", "lr": 1e-4, "warmup_steps": 10},
        {"type": "linear", "start_lr": 1e-4, "end_lr": 1e-4},
        {"type": "cosine", "peak_lr": 1e-4, "min_lr": 1e-4},
        {"type": "from_base", "decay": "none"},
        {"type": "wsd", "peak_lr": 1e-4, "decay_steps": 0},
        {"type": "step", "phases": [{"fraction": 0.5, "lr": 1e-4}, {"fraction": 0.5, "lr": 2e-4}]},
    ],
)
def test_anneal_without_decay_is_flagged(schedule: dict[str, Any]) -> None:
    found = anneal_without_decay(recipe(stage("cool", kind="cooldown", schedule=schedule)), REGISTRY)
    assert [(f.stage, f.field) for f in found] == [("cool", "stages[cool].schedule")]
    assert "does not decay" in found[0].message


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "linear", "start_lr": 1e-4},
        {"type": "cosine", "peak_lr": 1e-4, "min_lr": 1e-5, "warmup_steps": 100},
        {"type": "from_base", "decay": "linear"},
        {"type": "wsd", "peak_lr": 1e-4, "decay_fraction": 0.2, "decay": "1-sqrt"},
        {"type": "step", "phases": [{"fraction": 0.5, "lr": 2e-4}, {"fraction": 0.5, "lr": 1e-4}]},
    ],
)
def test_anneal_with_decay_passes(schedule: dict[str, Any]) -> None:
    assert not anneal_without_decay(recipe(stage("a", kind="decay", schedule=schedule)), REGISTRY)


def test_only_anneal_like_kinds_need_a_decay() -> None:
    flat = {"type": "constant", "lr": 1e-4}
    assert not anneal_without_decay(recipe(stage("long", kind="long-context", schedule=flat)), REGISTRY)
    assert not anneal_without_decay(recipe(stage("re", kind="pretraining", schedule=flat)), REGISTRY)


# ---------------------------------------------------------------- stated-third-party-only


def test_third_party_only_reads_each_part_of_the_citation() -> None:
    assert third_party_only("§2.3 as transcribed (sequence length 4,096)")
    assert third_party_only("report's data section as relayed by third-party notes [T] (70%; STEM)")
    assert third_party_only("Table 2 as transcribed (AdamW); eps and clipping are not given")  # a remark, no source
    assert not third_party_only("§2.5 as transcribed (64K); config.json max_position_embeddings 65536")
    assert not third_party_only("Table 13; released config")
    assert not third_party_only("a blog post; it says 4T")  # no third-party marker


def test_stated_third_party_only_flags_stated_entries_only() -> None:
    r = recipe(
        stage("a"),
        provenance={
            "stages[a].tokens": "stated: §3 as transcribed (1B tokens)",
            "stages[a].sequence_length": "stated: §3 as transcribed (4K); config.json max_position_embeddings",
            "base.context_length": "derived: Table 2 as transcribed, 2 × 2048",
            "base.lr_at_end": "stated: a third-party copy of Table 4",
        },
    )
    found = stated_third_party_only(r, REGISTRY)
    assert [(f.stage, f.field) for f in found] == [("a", "stages[a].tokens"), (None, "base.lr_at_end")]
    assert found[0].message.startswith("stated from a third-party copy only")


# ---------------------------------------------------------------- the real catalogue


def test_rules_over_the_real_catalogue_are_located() -> None:
    rules = run_rules(CATALOG.all(), REGISTRY)
    assert list(rules) == RULE_NAMES
    for name, rule in rules.items():
        assert rule["count"] == len(rule["findings"]) and rule["summary"], name
        for finding in rule["findings"]:
            r = CATALOG.get(finding["recipe"])
            paths = set(path_aliases(r.model_dump(mode="json", exclude_none=True)).values())
            assert finding["field"] in paths, (name, finding)
            assert finding["stage"] is None or finding["stage"] in {s.name for s in r.stages}, (name, finding)
            assert finding["message"], (name, finding)
    # today's catalogue: every stage that starts elsewhere says why, and every anneal decays
    assert rules["init-not-previous"]["count"] == 0, rules["init-not-previous"]["findings"]
    assert rules["anneal-without-decay"]["count"] == 0, rules["anneal-without-decay"]["findings"]


def test_finding_location() -> None:
    assert (
        Finding("r", "olmo", "anneal", "stages[anneal].tokens", "m").location()
        == "olmo › anneal › stages[anneal].tokens"
    )
    assert Finding("r", "olmo", None, "base.lr_at_end", "m").location() == "olmo › base.lr_at_end"


# ---------------------------------------------------------------- the command


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["lint", *args], env={"COLUMNS": "200"})


def test_lint_json_reports_rules_and_counts() -> None:
    result = invoke("--json", "--min-tagged", "0", "--min-stated", "0")
    assert result.exit_code == 0, result.output  # findings are warnings
    data = json.loads(result.stdout)
    assert set(data) >= {"tagged", "stated", "numbers", "ok", "recipes", "rules", "findings"}
    assert set(data) >= {"recipes_count", "organisations_count", "stages_count", "sources_count", "models_count"}
    assert data["ok"] is True and data["recipes_count"] == len(CATALOG.recipes) == len(data["recipes"])
    assert data["organisations_count"] == len({organisation(r) for r in CATALOG.all()})
    assert list(data["rules"]) == RULE_NAMES
    assert data["findings"] == sum(rule["count"] for rule in data["rules"].values())
    for rule in data["rules"].values():
        assert set(rule) == {"summary", "count", "findings"}
        assert all(set(f) == {"recipe", "stage", "field", "message"} for f in rule["findings"])
    strict = invoke("--json", "--strict", "--min-tagged", "0", "--min-stated", "0")
    assert strict.exit_code == (1 if data["findings"] else 0)
    assert json.loads(strict.stdout)["ok"] is (not data["findings"])


def test_lint_prints_findings_after_the_coverage_table() -> None:
    result = invoke("--min-tagged", "0", "--min-stated", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "olmo-2-1124-7b" in out and out.index("overall:") < out.index("rules:")
    for name in RULE_NAMES:
        assert out.index("rules:") < out.index(name)
    assert "warnings" in out


def test_strict_fails_on_a_finding(repo: Path) -> None:
    path = repo / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml"
    text = path.read_text()
    assert "schedule: {type: from_base" in text
    path.write_text(text.replace("kind: anneal", "kind: cooldown", 1).replace("decay: linear", "decay: none", 1))
    result = invoke("--json", "--strict")
    data = json.loads(result.stdout)
    assert any(f["recipe"] == "olmo-2-1124-7b" for f in data["rules"]["anneal-without-decay"]["findings"]), data
    assert result.exit_code == 1 and data["ok"] is False


def test_organisation_ignores_a_parenthesised_remark() -> None:
    assert organisation(recipe(stage("a"))) == "Lab"


# ---------------------------------------------------------------- README counts


def test_readme_counts_are_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert COUNTS_START in readme and COUNTS_END in readme
    assert readme == readme_with_counts(readme, lint_report(CATALOG)), (
        "README.md's catalogue counts are stale: run `midtrain lint --write-counts README.md`"
    )


def test_write_counts_rewrites_only_the_region(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n{COUNTS_START}\nThe catalogue holds 2 recipes.\n{COUNTS_END}\nafter\n")
    result = invoke("--write-counts", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text()
    report = lint_report(CATALOG)
    assert text.startswith(f"# Title\n\nbefore\n{COUNTS_START}\nThe catalogue holds {report['recipes_count']} recipes")
    assert text.endswith(f"stated.\n{COUNTS_END}\nafter\n")
    assert f"{report['numbers']:,} numbers" in text
    assert "unchanged" in invoke("--write-counts", str(page)).stdout
    page.write_text("no region here\n")
    missing = invoke("--write-counts", str(page))
    assert missing.exit_code == 2 and "no counts region" in missing.output
