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
