"""Every browsing command through Typer's runner, including --json output and error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midtrain.cli import app

runner = CliRunner()
OLMO = "olmo-2-1124-7b"


def run(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def run_json(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
    return json.loads(run(*args, "--json", code=code).stdout)


def test_list_table_and_json() -> None:
    assert OLMO in run("list").stdout
    rows = run_json("list")
    row = next(r for r in rows if r["id"] == OLMO)
    assert row["mid_training_tokens"] == 150e9  # 3 runs × 50B
    assert row["final_context"] == 4096 and row["stages"] == 1 and "math" in row["objectives"]


def test_list_uses_cache_on_second_call() -> None:
    first = run_json("list")
    second = run_json("list")  # served from the validated-row cache
    assert first == second


def test_list_filters_and_sort() -> None:
    assert [r["id"] for r in run_json("list", "--technique", "model-souping")] and all(
        "model-souping" in r["techniques"] for r in run_json("list", "--technique", "model-souping")
    )
    assert all(r["family"] == "olmo2" for r in run_json("list", "--family", "olmo2"))
    assert all("ai2" in r["organization"].lower() for r in run_json("list", "--org", "Ai2"))
    tokens = [r["mid_training_tokens"] for r in run_json("list", "--sort", "tokens")]
    assert tokens == sorted(tokens)
    assert run_json("list", "--objective", "agentic", "--family", "olmo2") == []


def test_list_sorts_by_mid_training_tokens_not_pretraining_phases() -> None:
    """Marin's 6.32T-token Phoenix phase is pre-training: it must not make Marin the largest mid-training."""
    rows = run_json("list", "--sort", "tokens")
    ids = [r["id"] for r in rows]
    largest = ids[-1]
    assert largest != "marin-8b"
    marin = next(r for r in rows if r["id"] == "marin-8b")
    assert marin["mid_training_tokens"] == pytest.approx(2.64e12) and marin["total_tokens"] == pytest.approx(8.96e12)
    assert ids.index("marin-8b") < ids.index("deepseek-coder-v2")  # 2.64T of mid-training against 6.08T
    v3 = next(r for r in rows if r["id"] == "deepseek-v3")
    assert v3["mid_training_tokens"] < v3["total_tokens"]  # the 500B LR tail is pre-training
    assert all(r["mid_training_tokens"] <= r["total_tokens"] for r in rows)


def test_list_json_carries_both_totals_and_the_table_says_mid_training() -> None:
    for row in run_json("list"):
        assert {"mid_training_tokens", "total_tokens"} <= set(row)
    assert "mid-training tokens" in run("list").stdout
    compared = run_json("compare", "marin-8b", "deepseek-v3", "--fields", "mid_training_tokens,total_tokens")
    assert compared["rows"] == {"mid_training_tokens": ["2.64T", "126B"], "total_tokens": ["8.96T", "626B"]}


def test_list_rejects_unknown_filter_values() -> None:
    result = run("list", "--objective", "maths", code=2)
    assert "unknown objective 'maths'" in result.output and "long-context" in result.output
    assert "unknown sort key" in run("list", "--sort", "size", code=2).output


def test_show_renders_provenance_marks() -> None:
    out = run("show", OLMO).stdout
    for fragment in (
        "stage 1: anneal",
        "dolmino-math",
        "20.8%●",
        "from the base's LR, linear → 0",
        "soup",
        "GSM8K",
        "provenance:",
    ):
        assert fragment in out, fragment


def test_show_json_yaml_provenance() -> None:
    data = run_json("show", OLMO)
    assert data["stages"][0]["schedule"]["type"] == "from_base"
    assert data["base"]["lr_at_end"] == pytest.approx(6.1499e-5)
    yaml_text = run("show", OLMO, "--yaml").stdout
    assert yaml_text.startswith("# yaml-language-server") and "id: olmo-2-1124-7b" in yaml_text
    table = run("show", OLMO, "--provenance").stdout
    assert "base.lr_at_end" in table and "stated" in table and "100% with provenance" in table


def test_show_unknown_id_suggests() -> None:
    result = run("show", "olmo-2-7b", code=2)
    assert "no recipe with id 'olmo-2-7b'" in result.output and OLMO in result.output


def test_search() -> None:
    hits = run_json("search", "souping")
    assert OLMO in [h["id"] for h in hits] and all("souping" in json.dumps(h).lower() or h["score"] > 0 for h in hits)
    assert run("search", "no-such-word-anywhere", code=1)


def test_search_query_is_text_not_markup() -> None:
    """A query with brackets is shown as typed; `[/x]` used to crash Rich's markup parser."""
    assert "nothing matches '[/zz]'" in run("search", "[/zz]", code=1).stdout
    assert "nothing matches '[bold]zz'" in run("search", "[bold]zz", code=1).stdout


def test_cp_validate_diff_compare(tmp_path: Path) -> None:
    dest = tmp_path / "olmo-more-math.yaml"
    assert "copied" in run("cp", OLMO, str(dest)).stdout
    text = dest.read_text()
    assert "id: olmo-more-math" in text
    dest.write_text(
        text.replace("share: 0.472,", "share: 0.372,")
        .replace("share: 0.208,", "share: 0.308,")
        .replace("tokens: 50B", "tokens: 100B")
    )
    assert "1 recipe(s) valid" in run("validate", str(dest)).stdout
    assert "exists" in run("cp", OLMO, str(dest), code=2).output

    diff = run_json("diff", OLMO, str(dest))
    stage = diff["stages"][0]
    assert {c["field"] for c in stage["changes"]} >= {"tokens"}
    deltas = {m["key"]: m["delta"] for m in stage["mixture"]}
    assert deltas["dolmino-math"] == pytest.approx(0.1, abs=1e-3) and deltas["dolmino-dclm"] == pytest.approx(
        -0.1, abs=1e-3
    )
    assert "dolmino-math" in run("diff", OLMO, str(dest)).stdout

    compared = run_json("compare", OLMO, str(dest), "--fields", "mid_tokens,base.peak_lr,stages[anneal].tokens")
    assert compared["rows"]["mid_tokens"] == ["150B", "300B"]
    assert compared["rows"]["stages[anneal].tokens"] == [50e9, 100e9]
    assert "unknown field" in run("compare", OLMO, str(dest), "--fields", "nope", code=2).output
    assert "at least two" in run("compare", OLMO, code=2).output


def test_validate_reports_every_problem_and_exits_1(tmp_path: Path, olmo_text: str) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        olmo_text.replace("id: olmo-2-1124-7b", "id: broken")
        .replace("tokens: 50B", "tokens: lots")
        .replace("title:", "titel:")
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = run("validate", str(bad), str(empty), code=1)
    assert "stages[anneal].tokens" in result.output and "titel" in result.output and "file is empty" in result.output
    data = run_json("validate", str(bad), code=1)
    assert data["ok"] is False and len(data["problems"]) >= 3
    assert all(p["file"] and p["line"] for p in data["problems"])


def test_validate_default_is_the_catalogue() -> None:
    assert "valid" in run("validate").stdout
    assert run_json("validate", "--strict")["ok"] is True


def test_lint_json_shape() -> None:
    data = json.loads(run("lint", "--json", "--min-tagged", "0", "--min-stated", "0").stdout)
    assert set(data) >= {"tagged", "stated", "recipes"}
    assert data["recipes"][OLMO]["tagged"] == 1.0


def test_schema_is_draft_2020_12_and_validates_recipes(tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads(run("schema").stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    from midtrain.catalog import load_catalog

    for recipe_id, raw in load_catalog().raw.items():
        errors = list(validator.iter_errors(raw))
        assert not errors, (recipe_id, errors[0].message)
    assert "registry: sources" in run("schema", "sources").stdout
    out = run("schema", "--out", str(tmp_path)).stdout
    assert (tmp_path / "recipe.schema.json").exists() and "registry-scales.schema.json" in out
    assert "unknown schema" in run("schema", "widgets", code=2).output


def test_committed_schema_files_are_current() -> None:
    """docs/schema/*.json is what editors load; it must match the code."""
    from midtrain.schema.export import json_schema

    root = Path(__file__).resolve().parents[2]
    stored = json.loads((root / "docs" / "schema" / "recipe.schema.json").read_text())
    assert stored == json.loads(json.dumps(json_schema("recipe"))), "run `midtrain schema --out docs/schema`"


def test_help_has_examples() -> None:
    for command in ("list", "show", "search", "diff", "compare", "validate", "lint", "schema", "cp"):
        assert "Examples" in run(command, "--help").stdout, command


def test_browsing_path_imports_nothing_heavy() -> None:
    code = "import sys; sys.argv=['midtrain', 'show', 'olmo-2-1124-7b']; from midtrain.cli import main; main()"
    for argv in ("list", "show"):
        proc = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-c",
                code.replace(
                    "'show', 'olmo-2-1124-7b'", f"'{argv}'" + (", 'olmo-2-1124-7b'" if argv == "show" else "")
                ),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
        assert not modules & {"torch", "transformers", "datasets", "dvc"}, modules & {
            "torch",
            "transformers",
            "datasets",
            "dvc",
        }


def test_console_script_error_is_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: !!python/object/apply:os.system ['true']\n")
    proc = subprocess.run([sys.executable, "-m", "midtrain", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and "unsupported YAML tag" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "midtrain", "show", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
