"""`midtrain validate` reports every problem of a recipe in one run, at by-name paths, with hints.

Pydantic skips a model's checks when one of its fields fails; midtrain/schema/checks.py runs them
anyway on what does validate, and the recipe-level checks on the plain data. These tests break a real
recipe in several places at once and expect one run to name each mistake on its line, and nothing
that only follows from another.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from midtrain.catalog import load_catalog, validate_paths
from midtrain.cli import app
from midtrain.errors import LocatedErrors
from midtrain.schema.checks import cross_problems, recipe_paths
from midtrain.schema.locate import walk
from midtrain.schema.migrate import migrate
from midtrain.schema.provenance import path_aliases
from midtrain.schema.recipe import Recipe
from midtrain.schema.stage import Batch, Stage
from midtrain.yamlio import format_path, load_yaml

REPO = Path(__file__).resolve().parents[2]
OLMO = REPO / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml"

SECOND_STAGE = """\
  - name: long-context
    kind: long-context
    init: anneal
    tokens: 10B
    steps: 2384
    sequence_length: 8192
    batch: {sequences: 512}
    schedule: {type: constant, lr: 1.0e-5}
    mixture:
      components:
        - {source: dolmino-dclm, share: 0.6}
        - {source: dolmino-math, share: 0.4}

merges:"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"the recipe no longer contains {old!r}"
    return text.replace(old, new, 1)


def two_stages(olmo_text: str) -> str:
    """The OLMo 2 recipe with a second, valid stage (10B tokens = 2,384 steps × 512 × 8,192)."""
    return edit(olmo_text, "\nmerges:", "\n" + SECOND_STAGE)


def line_of(text: str, needle: str, after: str | None = None) -> int:
    lines = text.splitlines()
    start = 0 if after is None else next(i for i, line in enumerate(lines) if after in line)
    return next(number for number, line in enumerate(lines[start:], start=start + 1) if needle in line)


def validate_cli(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def rendered(output: str, path: Path) -> dict[str, tuple[int, str]]:
    """`FILE:LINE: PATH: message` lines (with their indented expected/found lines) by field path."""
    out: dict[str, tuple[int, str]] = {}
    current = None
    for line in output.splitlines():
        match = re.match(rf"{re.escape(str(path))}:(\d+): (\S+): (.*)", line)
        if match:
            current = match.group(2)
            assert current not in out, f"{current} reported twice:\n{output}"
            out[current] = (int(match.group(1)), match.group(3))
        elif current and line.startswith("    "):
            number, text = out[current]
            out[current] = (number, text + "\n" + line.strip())
    return out


@pytest.fixture
def valid_text(olmo_text: str) -> str:
    return two_stages(olmo_text)


def test_the_two_stage_starting_point_is_valid(tmp_path: Path, valid_text: str) -> None:
    """A valid recipe still validates (through the CLI and Recipe.model_validate alone)."""
    path = tmp_path / "olmo-2-1124-7b.yaml"
    path.write_text(valid_text)
    code, output = validate_cli(path)
    assert code == 0, output
    assert "1 recipe(s) valid" in output
    code, output = validate_cli(OLMO)
    assert code == 0 and "1 recipe(s) valid" in output, output


# ---------------------------------------------------------------- one run, every mistake


def six_mistakes(valid_text: str) -> str:
    text = edit(valid_text, "    z_loss: 1.0e-5\n", "    z_los: 1.0e-5\n")  # 1. a typo in stage `anneal`
    text = edit(text, "    steps: 2384\n", "    steps: 1000\n")  # 2. steps × batch ≠ tokens in `long-context`
    text = edit(text, "    init: anneal\n", "    init: anneel\n")  # 3. an init that names no stage
    text = edit(text, '  base.peak_lr: "stated: Table 3"', '  base.peek_lr: "stated: Table 3"')  # 4. provenance
    text = edit(text, "share: 0.4}", "share: 0.3}")  # 5. shares of `long-context` sum to 0.9
    return edit(text, "lr: 1.0e-5}", "lr: 1.0e-5, warmup_steps: many}")  # 6. a wrong type, same stage


def test_one_validate_run_reports_every_mistake(tmp_path: Path, valid_text: str) -> None:
    path = tmp_path / "olmo-2-1124-7b.yaml"
    text = six_mistakes(valid_text)
    path.write_text(text)
    code, output = validate_cli(path)
    assert code == 1, output
    found = rendered(output, path)
    later = "- name: long-context"
    expected = {
        "stages[anneal].z_los": (line_of(text, "z_los:"), "unknown field 'z_los'; did you mean 'z_loss'?"),
        "stages[long-context].steps": (
            line_of(text, "steps: 1000"),
            "1,000 steps at 4,194,304 tokens/step = 4.194e+09 tokens disagrees with tokens 1e+10",
        ),
        "stages[long-context].init": (
            line_of(text, "init: anneel"),
            "'anneel' is not an earlier stage, a merge, 'base' or 'previous'",
        ),
        "provenance.base.peek_lr": (line_of(text, "base.peek_lr:"), "'base.peek_lr' is not a field of this recipe"),
        "stages[long-context].mixture": (line_of(text, "mixture:", after=later), "shares must sum to 1"),
        "stages[long-context].schedule.warmup_steps": (line_of(text, "warmup_steps: many"), "wrong type"),
    }
    for field, (line, message) in expected.items():
        assert field in found, f"{field} not reported:\n{output}"
        assert found[field][0] == line, (field, found[field], line)
        assert message in found[field][1], (field, found[field])
    assert set(found) == set(expected), output  # nothing else: no consequence of these reported
    assert "✗ 6 problem(s)" in output
    # the unknown field: did-you-mean and the fields a stage allows, in the schema's order
    hint = found["stages[anneal].z_los"][1]
    assert "allowed: name, kind, description, init, " in hint and ", z_loss," in hint
    assert "expected: a valid integer" in found["stages[long-context].schedule.warmup_steps"][1]
    assert not re.search(r"stages\[\d\]|\.constant\.|function-after", output), output


def test_json_output_has_the_same_problems_with_lines(tmp_path: Path, valid_text: str) -> None:
    import json

    path = tmp_path / "olmo-2-1124-7b.yaml"
    path.write_text(six_mistakes(valid_text))
    result = CliRunner().invoke(app, ["validate", str(path), "--json"])
    data = json.loads(result.stdout)
    assert data["ok"] is False and len(data["problems"]) == 6
    assert all(p["line"] and p["path"] and p["file"] == str(path) for p in data["problems"])
    typo = next(p for p in data["problems"] if p["path"] == "stages[anneal].z_los")
    assert "did you mean 'z_loss'?" in typo["message"] and "allowed: name, kind" in typo["expected"]


# ---------------------------------------------------------------- what a broken value hides, and what not


def problems_of(tmp_path: Path, text: str) -> list[tuple[str | None, str]]:
    path = tmp_path / "olmo-2-1124-7b.yaml"
    path.write_text(text)
    recipes, problems = validate_paths([path], REPO)
    assert not recipes
    return [(p.path, p.message) for p in problems]


def test_a_typo_does_not_hide_its_stage_arithmetic(tmp_path: Path, valid_text: str) -> None:
    text = edit(valid_text, "    z_loss: 1.0e-5\n", "    z_loss: 1.0e-5\n    colour: blue\n")
    text = edit(text, "batch: {sequences: 1024, tokens: 4194304}", "batch: {sequences: 1024, tokens: 2000000}")
    found = problems_of(tmp_path, text)
    assert ("stages[anneal].colour", "unknown field 'colour'") in found, found
    assert any(path == "stages[anneal].batch.tokens" and "disagrees with batch.tokens" in m for path, m in found)
    assert len(found) == 2, found


def test_a_misspelt_budget_is_one_problem_not_two(tmp_path: Path, valid_text: str) -> None:
    """Without `tokens` the stage has no budget; that follows from the typo and is not repeated."""
    text = edit(valid_text, "    tokens: 50B\n", "    tokns: 50B\n")
    text = edit(text, "batch: {sequences: 1024, tokens: 4194304}", "batch: {sequences: 1024, tokens: 2000000}")
    found = problems_of(tmp_path, text)
    assert ("stages[anneal].tokns", "unknown field 'tokns'; did you mean 'tokens'?") in found, found
    assert any(path == "stages[anneal].batch.tokens" for path, _ in found), found  # does not read `tokens`
    assert not any("budget" in message for _, message in found), found
    assert len(found) == 2, found


def test_a_broken_field_hides_only_the_checks_that_read_it(tmp_path: Path, valid_text: str) -> None:
    text = edit(valid_text, "    tokens: 50B\n", "    tokens: fifty\n")
    text = edit(text, "batch: {sequences: 1024, tokens: 4194304}", "batch: {sequences: 1024, tokens: 2000000}")
    text = edit(text, "    init: anneal\n", "    init: nowhere\n")
    found = problems_of(tmp_path, text)
    paths = [path for path, _ in found]
    assert paths.count("stages[anneal].tokens") == 1 and "stages[anneal].batch.tokens" in paths, found
    assert "stages[long-context].init" in paths, found
    assert len(found) == 3, found


def test_mixture_shares_are_checked_next_to_a_broken_component(tmp_path: Path, valid_text: str) -> None:
    text = edit(valid_text, "share: 0.4}", "share: 0.3, max_epochs: lots}")
    found = problems_of(tmp_path, text)
    assert ("stages[long-context].mixture.components[dolmino-math].max_epochs", "wrong type") in found, found
    assert any(path == "stages[long-context].mixture" and "shares must sum to 1" in m for path, m in found), found
    assert len(found) == 2, found


def test_a_broken_share_does_not_also_report_the_sum(tmp_path: Path, valid_text: str) -> None:
    found = problems_of(tmp_path, edit(valid_text, "share: 0.4}", "share: forty}"))
    assert found == [("stages[long-context].mixture.components[dolmino-math].share", "wrong type")], found


def test_union_members_the_data_was_not_written_for_add_no_noise(tmp_path: Path, valid_text: str) -> None:
    """`batch` is a Batch or 'unknown': a mapping is a Batch, a scalar is one 'wrong type'."""
    mapping = problems_of(tmp_path, edit(valid_text, "batch: {sequences: 512}", "batch: {sequences: 512, tokns: 5}"))
    assert mapping == [("stages[long-context].batch.tokns", "unknown field 'tokns'; did you mean 'tokens'?")]
    path = tmp_path / "olmo-2-1124-7b.yaml"
    path.write_text(edit(valid_text, "batch: {sequences: 512}", "batch: lots"))
    _, problems = validate_paths([path], REPO)
    (problem,) = problems
    assert problem.path == "stages[long-context].batch" and problem.message == "wrong type"
    assert problem.expected == "a mapping or 'unknown'" and problem.found == "'lots'"


def test_a_tagged_union_is_walked_by_its_tag(tmp_path: Path, valid_text: str) -> None:
    """The schedule's `type` picks the model whose fields are allowed (and the tag is not in the path)."""
    text = edit(
        valid_text,
        "{type: constant, lr: 1.0e-5}",
        "{type: wsd, peak_lr: 1.0e-5, decay_fraction: 0.2, decay_fractoin: 0.2}",
    )
    path = tmp_path / "olmo-2-1124-7b.yaml"
    path.write_text(text)
    _, problems = validate_paths([path], REPO)
    (problem,) = problems
    assert problem.path == "stages[long-context].schedule.decay_fractoin"
    assert problem.message == "unknown field 'decay_fractoin'; did you mean 'decay_fraction'?"
    assert problem.expected is not None and problem.expected.startswith("a WSD field; allowed: ")
    assert "peak_lr" in problem.expected and " lr," not in problem.expected  # WSD's fields, not Constant's
    assert problem.line == line_of(text, "decay_fractoin")
    untagged = problems_of(tmp_path, edit(valid_text, "{type: constant, lr: 1.0e-5}", "{lr: 1.0e-5}"))
    assert untagged == [
        ("stages[long-context].schedule", "required field 'type' is missing (it says which kind this is)")
    ]


def test_registry_unknown_fields_get_hints(repo: Path) -> None:
    sources = repo / "registry" / "sources.yaml"
    text = sources.read_text()
    sources.write_text(edit(text, "  category: math\n  format: short-cot", "  category: math\n  fromat: short-cot"))
    _, problems = validate_paths([repo / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml"], repo)
    (problem,) = problems
    assert problem.path == "dolmino-math.fromat" and problem.file == sources
    assert problem.message == "unknown field 'fromat'; did you mean 'format'?"
    assert problem.expected is not None and problem.expected.startswith("a DataSource field; allowed: description, ")


# ---------------------------------------------------------------- paths by name


def olmo_data() -> dict[str, Any]:
    data, _ = load_yaml(OLMO)
    return data


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("stages", 0, "schedule", "end_lr"), "stages[anneal].schedule.end_lr"),
        (("stages", 0, "mixture", "components", 5, "share"), "stages[anneal].mixture.components[dolmino-math].share"),
        (("merges", 0, "inputs", 0, "stage"), "merges[soup].inputs[0].stage"),
        (("results", 1, "after"), "results[MMLU].after"),
        (("stages", 0, "runs", "seeds", 2), "stages[anneal].runs.seeds[2]"),
        (("contradictions", 0, "about", 0), "contradictions[0].about[0]"),
        (("stages", 7, "name"), "stages[7].name"),  # no such item: by index
    ],
)
def test_paths_name_list_items_as_provenance_does(loc: tuple[str | int, ...], expected: str) -> None:
    data = olmo_data()
    assert format_path(loc, data) == expected
    if loc[1] != 7:
        assert path_aliases(data).get(expected) == expected  # the name provenance uses for that field


def test_paths_without_the_data_use_indices() -> None:
    assert format_path(("stages", 0, "mixture", "components", 5, "share")) == "stages[0].mixture.components[5].share"
    assert format_path(("stages", 0, "tokens"), {"stages": [{"tokens": 1}]}) == "stages[0].tokens"  # no name


def test_walk_separates_union_labels_from_keys() -> None:
    data = olmo_data()
    data["stages"][0]["schedule"] = {"type": "wsd", "peak_lr": "x"}
    data["stages"][0]["batch"] = {"sequences": 1, "tokns": 5}
    tagged = walk(Recipe, data, ("stages", 0, "schedule", "wsd", "peak_lr"))
    assert tagged.path == ("stages", 0, "schedule", "peak_lr") and tagged.labels[0][1] == "wsd"
    smart = walk(Recipe, data, ("stages", 0, "batch", "function-after[_some(), Batch]", "tokns"))
    assert smart.path == ("stages", 0, "batch", "tokns") and smart.parents == [Batch]
    stage_key = walk(Recipe, data, ("stages", 0, "colour"))
    assert stage_key.parents == [Stage]
    provenance = walk(Recipe, data, ("provenance", "stages[anneal].tokens"))
    assert provenance.path == ("provenance", "stages[anneal].tokens")  # a key with brackets stays a key


# ---------------------------------------------------------------- recipe-level checks on plain data


def _data(text: str) -> dict[str, Any]:
    data, _ = load_yaml(Path("olmo-2-1124-7b.yaml"), text)
    migrated, _ = migrate(data)
    return migrated


def _set(path: tuple[str | int, ...], value: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node[part]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


_DELETE = object()

CROSS_CASES: dict[str, list[Any]] = {
    "duplicate stage name": [_set(("stages", 1, "name"), "anneal")],
    "init names no stage": [_set(("stages", 1, "init"), "anneel")],
    "merge input names no stage": [_set(("merges", 0, "inputs", 0, "stage"), "nope")],
    "merge run out of range": [_set(("merges", 0, "inputs", 0), {"stage": "anneal", "run": 5})],
    "merge name taken": [_set(("merges", 0, "name"), "long-context")],
    "final names nothing": [_set(("final",), "nope")],
    "provenance path": [_set(("provenance", "stages[anneal].tokenz"), "stated: x")],
    "defaults have paths": [
        _set(("provenance", "stages[long-context].runs.count"), "stated: x"),
        _set(("final",), "x"),
    ],
    "contradiction path": [_set(("contradictions", 0, "about"), ["stages[anneal].nope"])],
    "from_base without lr_at_end": [_set(("base", "lr_at_end"), _DELETE)],
    "rope beyond base context": [
        _set(("stages", 1, "sequence_length"), 16384),
        _set(("stages", 1, "batch"), {"sequences": 256}),
        _set(("stages", 1, "steps"), _DELETE),
        _set(("stages", 1, "rope"), {"scaling": {"type": "linear", "factor": 2}}),
    ],
}
if "init_at" in Stage.model_fields:
    CROSS_CASES["branch point outside its stage"] = [_set(("stages", 1, "init_at"), {"tokens": "60B"})]
    CROSS_CASES["branch point without a stage"] = [
        _set(("stages", 1, "init"), "base"),
        _set(("stages", 1, "init_at"), {"fraction": 0.5}),
    ]
if "reported" in Recipe.model_fields:
    CROSS_CASES["reported path"] = [
        _set(("reported",), [{"path": "stages[anneal].nope", "value": 1, "cite": "x", "why": "y"}])
    ]
if "at" in Recipe.model_fields["results"].annotation.__args__[0].model_fields:
    CROSS_CASES["result at no stage"] = [_set(("results", 0, "at"), {"stage": "nope", "fraction": 0.5})]


@pytest.mark.parametrize("case", list(CROSS_CASES))
def test_plain_data_checks_agree_with_the_model(valid_text: str, case: str) -> None:
    """checks.cross_problems mirrors Recipe._cross_checks: same paths, same messages."""
    data = _data(valid_text)
    Recipe.model_validate(data)
    for mutate in CROSS_CASES[case]:
        mutate(data)
    with pytest.raises(ValidationError) as info:
        Recipe.model_validate(copy.deepcopy(data))
    (error,) = info.value.errors()
    located = (error.get("ctx") or {}).get("error")
    assert error["loc"] == () and isinstance(located, LocatedErrors), error
    assert sorted(map(repr, cross_problems(data))) == sorted(map(repr, located.items))


def test_plain_data_checks_pass_and_paths_agree_on_the_catalogue() -> None:
    catalog = load_catalog()
    for recipe_id, recipe in catalog.recipes.items():
        raw, _ = migrate(catalog.raw[recipe_id])
        assert cross_problems(raw) == [], recipe_id
        dumped = recipe.model_dump(mode="json", exclude={"provenance", "contradictions"}, exclude_none=True)
        assert recipe_paths(raw) == path_aliases(dumped), recipe_id
