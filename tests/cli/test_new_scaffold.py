"""`midtrain new`: a skeleton that validate walks through, and that plans once filled in."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from midtrain.cli import app


def _new(tmp_path: Path, *extra: str) -> Path:
    result = CliRunner().invoke(app, ["new", "my-model", "--from-paper", "2501.15383", "--out", f"{tmp_path}/", *extra])
    assert result.exit_code == 0, result.output
    return tmp_path / "my-model.yaml"


def test_the_skeleton_lists_what_remains_in_one_validate_run(tmp_path: Path) -> None:
    path = _new(tmp_path, "--family", "qwen2", "--org", "My Lab")
    text = path.read_text()
    assert 'arxiv: "2501.15383"' in text and "year: 2025" in text and "family: qwen2" in text
    assert "$schema=" in text.splitlines()[0] and not text.splitlines()[0].split("$schema=")[1].startswith("/")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    for expected in ("base.model", "parameters", "base.context_length", "sequence_length", "mixture.components"):
        assert expected in result.output, (expected, result.output)


def test_a_filled_skeleton_validates_and_plan_refuses_only_the_unknown_budget(tmp_path: Path, repo: Path) -> None:
    path = _new(tmp_path)
    text = (
        path.read_text()
        .replace("parameters: TODO ", "parameters: 7.3B ")
        .replace("model: my-model-base ", "model: olmo-2-1124-7b ")
        .replace("context_length: TODO ", "context_length: 4096 ")
        .replace("sequence_length: TODO ", "sequence_length: 4096 ")
        .replace("source: my-model-data", "source: dclm-baseline")
        .replace("# lr_at_end: 3.0e-5 ", "lr_at_end: 3.0e-5 ")
    )
    target = repo / "recipes" / "mine" / "my-model.yaml"
    target.parent.mkdir()
    target.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(target)])
    assert result.exit_code == 0, result.output
    from midtrain.catalog import load_catalog

    assert "my-model" in load_catalog(repo).recipes
    refused = CliRunner().invoke(app, ["plan", "my-model", "--scale", "tiny"])
    assert refused.exit_code != 0 and "stages[anneal].tokens" in refused.output and "--set" in refused.output
    planned = CliRunner().invoke(app, ["plan", "my-model", "--scale", "tiny", "--set", "stages.anneal.tokens=20B"])
    assert planned.exit_code == 0, planned.output
    assert "schedule is unknown" in planned.output


def test_bad_ids_and_arxiv_ids_are_refused(tmp_path: Path) -> None:
    bad = CliRunner().invoke(app, ["new", "My Model", "--out", f"{tmp_path}/"])
    assert bad.exit_code != 0 and "not a valid recipe id" in bad.output
    bad = CliRunner().invoke(app, ["new", "ok", "--from-paper", "1313.12345", "--out", f"{tmp_path}/"])
    assert bad.exit_code != 0 and "not an arXiv id" in bad.output
    _new(tmp_path)
    again = CliRunner().invoke(app, ["new", "my-model", "--out", f"{tmp_path}/"])
    assert again.exit_code != 0 and "--force" in again.output
