from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from midtrain.cli import app

runner = CliRunner()


def test_inspect_json_with_recipe(prepared: Path) -> None:
    result = runner.invoke(
        app, ["data", "inspect", str(prepared), "--recipe", "olmo-2-1124-7b", "--json", "--sequences", "10000"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["streams"]["math.train"]["tokens"] > 0
    stage = info["stages"]["anneal"]
    for name, share in stage["target_shares"].items():
        assert abs(stage["realised_shares"][name] - share) < 0.01
    assert stage["samples"] and all(s["text"] for s in stage["samples"])
    table = runner.invoke(app, ["data", "inspect", str(prepared), "--recipe", "olmo-2-1124-7b"], env={"COLUMNS": "140"})
    assert table.exit_code == 0 and "realised" in table.stdout


def test_inspect_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 2 and "run `midtrain data prepare` first" in result.output


def test_prepare_rejects_bad_options(tmp_path: Path) -> None:
    assert "unknown scale" in runner.invoke(app, ["data", "prepare", "--scale", "huge", "--out", str(tmp_path)]).output
    assert (
        "--recipe is needed"
        in runner.invoke(app, ["data", "prepare", "--scale", "full", "--out", str(tmp_path)]).output
    )
    assert (
        "evaluation file not found"
        in runner.invoke(app, ["data", "prepare", "--out", str(tmp_path), "--eval-file", "nope.jsonl"]).output
    )
