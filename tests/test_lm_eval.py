"""The lm-evaluation-harness adapter, on a local task file and a model trained here."""

from __future__ import annotations

import json
from pathlib import Path


def test_lm_eval_adapter_on_a_local_task(prepared: Path, tmp_path: Path) -> None:
    from midtrain.evaluate import run_lm_eval
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train
    from tests.train.conftest import make_spec

    train(RunSpec.model_validate(make_spec(prepared, tmp_path / "run", steps=2)), progress=False)
    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1)], "label": 0}) + "\n"
            for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1)]
        )
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_arith.yaml").write_text(
        "task: tiny_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data) + "\n"
        'test_split: test\noutput_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n'
    )
    results = run_lm_eval(tmp_path / "run" / "model", ["tiny_arith"], tasks)
    assert results["tiny_arith"]["sample_len"] == 5 and 0.0 <= results["tiny_arith"]["acc,none"] <= 1.0


def test_local_tasks_are_indexed_without_lm_evals_own(tmp_path: Path) -> None:
    """A run asking only for local tasks indexes only the local folder (lm-eval's thousands of bundled
    task files take seconds per process); a bundled task or a local group brings in the full index."""
    from lm_eval.tasks import TaskManager

    from midtrain.evaluate import _task_manager

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\ndataset_path: json\noutput_type: loglikelihood\n")
    (tasks / "both.yaml").write_text("group: both\ntask: [mine, arc_easy]\n")
    built: list[bool] = []

    def factory(include_path: list[str], include_defaults: bool = True) -> TaskManager:
        built.append(include_defaults)
        return TaskManager(include_path=include_path, include_defaults=False)  # the real local index either way

    assert "mine" in _task_manager(factory, [str(tasks)], ["mine"]).all_tasks and built == [False]
    built.clear()
    _task_manager(factory, [str(tasks)], ["mine", "arc_easy"])
    assert built == [False, True]
    built.clear()
    _task_manager(factory, [str(tasks)], ["both"])
    assert built == [False, True]
    built.clear()
    _task_manager(factory, None, ["arc_easy"])
    assert built == [True]
