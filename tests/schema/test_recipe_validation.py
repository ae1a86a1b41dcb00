"""Valid and invalid recipes: every class of mistake gives file, line, field path, expected/found."""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.catalog import load_catalog, validate_paths
from midtrain.errors import MidtrainError


def write_variant(repo: Path, text: str, old: str, new: str, name: str = "olmo-2-1124-7b") -> Path:
    assert old in text, old
    path = repo / "recipes" / "olmo-2" / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def problems_for(repo: Path, path: Path):  # type: ignore[no-untyped-def]
    _, problems = validate_paths([path], repo)
    return problems


def test_all_catalogued_recipes_are_valid() -> None:
    catalog = load_catalog()
    assert "olmo-2-1124-7b" in catalog.recipes
    for recipe in catalog.all():
        assert recipe.stages and recipe.mid_training_tokens() is not None


def test_mid_training_tokens_leave_out_pretraining_phases() -> None:
    """Only `pretraining` stages are left out; total_tokens counts every stage."""
    catalog = load_catalog()
    marin = catalog.get("marin-8b")
    assert marin.stage("phoenix").kind.value == "pretraining"
    assert marin.total_tokens() == pytest.approx(8.96e12)
    assert marin.mid_training_tokens() == pytest.approx(1e12 + 1.34e12 + 0.3e12)  # jellyfish, starling, deeper
    v3 = catalog.get("deepseek-v3")
    assert v3.stage("lr-tail").kind.value == "pretraining"
    assert v3.mid_training_tokens() == pytest.approx(2 * 62.91456e9)
    assert v3.total_tokens() == pytest.approx(500e9 + 2 * 62.91456e9)
    olmo = catalog.get("olmo-2-1124-7b")  # continued-pretraining and anneal kinds count; runs multiply
    assert olmo.mid_training_tokens() == olmo.total_tokens() == 150e9
    for recipe in catalog.all():
        mid, total = recipe.mid_training_tokens(), recipe.total_tokens()
        assert mid is not None and total is not None and 0 < mid <= total, recipe.id


def test_changed_recipes_validate_and_keep_their_audit_fixes() -> None:
    repo = Path(__file__).resolve().parents[2]
    paths = [
        repo / "recipes" / rel
        for rel in (
            "nemotron/nemotron-nano-2.yaml",
            "minicpm/minicpm-2b.yaml",
            "deepseek/deepseek-v3.yaml",
            "marin/marin-8b.yaml",
        )
    ]
    recipes, problems = validate_paths(paths, repo)
    assert not problems and len(recipes) == 4
    nemotron = next(r for r in recipes if r.id == "nemotron-nano-2")
    for name in ("decay-phase2", "phase3"):
        batch = nemotron.stage(name).batch
        assert batch is not None and batch.sequences == 736 and batch.tokens == 736 * 8192 == 6_029_312
    batch_contradiction = next(c for c in nemotron.contradictions if "stages[phase3].batch.sequences" in c.about)
    sources = " ".join(batch_contradiction.sources)
    assert "768" in sources and "736" in sources and "model card" in sources
    assert "736" in batch_contradiction.choice
    minicpm = next(r for r in recipes if r.id == "minicpm-2b")
    note = minicpm.stage("decay").mixture.note or ""
    assert "not printed" not in note and "percentage" in note and "placeholder" in note


CASES = [
    # (old text, new text, message fragment, field path fragment, line needle)
    ("tokens: 50B", "tokens: fifty", "number such as 50e9", "stages[anneal].tokens", "tokens: fifty"),
    ("tokens: 50B", "tokens: -5", "expected a positive number", "stages[anneal].tokens", "tokens: -5"),
    ("tokens: 50B", "tokens: 1e20", "at most 1e15", "stages[anneal].tokens", "tokens: 1e20"),
    (
        "sequence_length: 4096",
        "sequence_length: 4096\n    colour: blue",
        "unknown field",
        "stages[anneal].colour",
        "colour: blue",
    ),
    ("title: OLMo 2 7B", "titel: OLMo 2 7B", "unknown field", "titel", "titel:"),
    ("    kind: anneal\n", "", "required field is missing", "stages[anneal].kind", "- name: anneal"),
    ("normalize: true", "normalize: false", "shares must sum to 1", "stages[anneal].mixture", "mixture:"),
    (
        "source: dolmino-math,",
        "source: dolmino-maths,",
        "unknown data source 'dolmino-maths' (did you mean dolmino-math",
        "stages[anneal].mixture.components[dolmino-maths].source",
        "dolmino-maths",
    ),
    ("model: olmo-2-1124-7b", "model: olmo-3-7b", "unknown base model", "base.model", "model: olmo-3-7b"),
    ("kind: anneal\n", "kind: annealing\n", "not an allowed value", "stages[anneal].kind", "kind: annealing"),
    ("type: from_base", "type: zigzag", "not an allowed value", "stages[anneal].schedule", "type: zigzag"),
    ("seeds: [42, 42069, 666]", "seeds: [42, 42069]", "2 seeds listed for 3 runs", "stages[anneal].runs", "runs:"),
    (
        "batch: {sequences: 1024, tokens: 4194304}",
        "batch: {sequences: 1024, tokens: 2000000}",
        "disagrees with batch.tokens",
        "stages[anneal].batch.tokens",
        "batch:",
    ),
    ("  lr_at_end: 6.1499e-5\n", "", "from_base schedule needs base.lr_at_end", "stages[anneal].schedule", "schedule:"),
    (
        '  base.peak_lr: "stated: Table 3"',
        '  base.peek_lr: "stated: Table 3"',
        "is not a field of this recipe",
        "provenance",
        "base.peek_lr",
    ),
    (
        '  base.peak_lr: "stated: Table 3"',
        '  base.peak_lr: "stated"',
        "expected 'stated: <citation>'",
        "provenance.base.peak_lr",
        "base.peak_lr",
    ),
    (
        '  base.peak_lr: "stated: Table 3"',
        "  base.peak_lr: {status: stated}",
        "needs `cite`",
        "provenance.base.peak_lr",
        "base.peak_lr",
    ),
    (
        "      - {stage: anneal}",
        "      - {stage: anneel}",
        "'anneel' is not a stage",
        "merges[soup].inputs[0].stage",
        "stage: anneel",
    ),
    ("id: olmo-2-1124-7b", "id: olmo-2-7b", "must match its file name", "id", "id: olmo-2-7b"),
    ("betas: [0.9, 0.95]", "betas: [0.9, 1.5]", "betas must lie in", "optimizer", "optimizer:"),
    ("schema_version: 2", "schema_version: 7", "newer than this midtrain", "schema_version", "schema_version"),
    ("parameters: 7B", "parameters: [7]", "wrong type", "parameters", "parameters:"),
]


@pytest.mark.parametrize(("old", "new", "message", "field", "needle"), CASES, ids=[c[2][:30] for c in CASES])
def test_invalid_recipe(repo: Path, olmo_text: str, old: str, new: str, message: str, field: str, needle: str) -> None:
    path = write_variant(repo, olmo_text, old, new)
    problems = problems_for(repo, path)
    assert problems, "the mutation should be rejected"
    match = [p for p in problems if message in p.render()]
    assert match, "\n".join(p.render() for p in problems)
    problem = match[0]
    assert problem.file == path
    assert field in (problem.path or ""), problem.render()
    assert problem.line == line_of(path, needle), problem.render()


def test_all_problems_reported_at_once(repo: Path, olmo_text: str) -> None:
    text = (
        olmo_text.replace("tokens: 50B", "tokens: lots")
        .replace("title: OLMo", "titel: OLMo")
        .replace("source: dolmino-wiki,", "source: wikipedia,")
    )
    path = repo / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml"
    path.write_text(text)
    problems = problems_for(repo, path)
    rendered = "\n".join(p.render() for p in problems)
    assert "stages[anneal].tokens" in rendered and "titel" in rendered and "wikipedia" in rendered


def test_rope_scaling_must_cover_sequence_length(repo: Path, olmo_text: str) -> None:
    new = "sequence_length: 65536\n    rope: {theta: 500000, scaling: {type: yarn, factor: 4, original_max_position_embeddings: 4096}}"
    path = write_variant(
        repo,
        olmo_text.replace("batch: {sequences: 1024, tokens: 4194304}", "batch: {sequences: 64}"),
        "sequence_length: 4096",
        new,
    )
    problems = problems_for(repo, path)
    assert any(
        "exceeds what the RoPE scaling covers" in p.message and p.line == line_of(path, "sequence_length: 65536")
        for p in problems
    ), [p.render() for p in problems]


def test_mixture_tokens_must_match_budget(repo: Path, olmo_text: str) -> None:
    path = write_variant(
        repo,
        olmo_text,
        "        - {source: dolmino-dclm, share: 0.472, max_epochs: 0.0323}",
        "        - {source: dolmino-dclm, share: 0.472, tokens: 1B}",
    )
    problems = problems_for(repo, path)
    assert any(
        "dolmino-dclm: 1e+09 tokens disagrees with its share" in p.message and p.line == line_of(path, "tokens: 1B")
        for p in problems
    ), [p.render() for p in problems]


def test_duplicate_source_in_mixture(repo: Path, olmo_text: str) -> None:
    path = write_variant(repo, olmo_text, "source: dolmino-wiki,", "source: dolmino-pes2o,")
    problems = problems_for(repo, path)
    assert any("listed more than once: dolmino-pes2o" in p.message for p in problems)


def test_registry_errors_name_file_and_line(repo: Path) -> None:
    sources = repo / "registry" / "sources.yaml"
    text = sources.read_text().replace(
        "  category: math\n  format: short-cot", "  category: maths\n  format: short-cot", 1
    )
    sources.write_text(text)
    with pytest.raises(MidtrainError) as info:
        load_catalog(repo)
    problem = info.value.problems[0]
    assert problem.file == sources and problem.path == "dolmino-math.category"
    assert problem.line == line_of(sources, "category: maths")


def test_migration_from_v0(repo: Path, olmo_text: str) -> None:
    old = olmo_text.replace("schema_version: 2", "schema_version: 0").replace(
        "    schedule: {type: from_base", "    lr_schedule: {type: from_base"
    )
    path = repo / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml"
    path.write_text(old)
    recipes, problems = validate_paths([path], repo)
    assert not problems and recipes[0].stages[0].schedule.type == "from_base"
