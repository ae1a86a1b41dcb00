"""Which mid-training runs of a plan train together (pipeline.run_waves) and how many at once
(pipeline.training_slots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.pipeline import run_waves, training_slots
from midtrain.plan.api import make_plan
from midtrain.plan.request import PlanRequest

ROOT = Path(__file__).resolve().parents[1]


def waves_of(recipe: str) -> list[list[str]]:
    plan = make_plan(PlanRequest(recipe=recipe), ROOT, resolve=False)
    return [[item.name for item in wave] for wave in run_waves(plan.mid)]


def test_data_orders_of_one_stage_train_together_and_the_soup_waits() -> None:
    assert waves_of("olmo-2-1124-7b") == [["anneal-0", "anneal-1", "anneal-2"], ["soup"]]


def test_a_stage_that_starts_from_the_previous_one_waits_for_it() -> None:
    plan = make_plan(PlanRequest(recipe="qwen3-8b"), ROOT, resolve=False)
    waves = run_waves(plan.mid)
    position = {item.name: index for index, wave in enumerate(waves) for item in wave}
    for name, spec in plan.mid.runs.items():
        init = getattr(spec.init, "path", "")
        for other, other_spec in plan.mid.runs.items():
            if other != name and Path(init).is_relative_to(Path(other_spec.out)):
                assert position[other] < position[name], f"{name} starts from {other} but trains with it"
    assert sum(len(w) for w in waves) == len(plan.mid.order)


@pytest.mark.parametrize(
    ("runs", "environ", "cores", "expected"),
    [
        (3, {"CUDA_VISIBLE_DEVICES": ""}, 2, (3, 1)),  # up to 1.5 runs a core, one thread each
        (3, {"CUDA_VISIBLE_DEVICES": ""}, 16, (3, 5)),
        (8, {"CUDA_VISIBLE_DEVICES": ""}, 2, (3, 1)),
        (1, {"CUDA_VISIBLE_DEVICES": ""}, 2, (1, 2)),
        (3, {"CUDA_VISIBLE_DEVICES": "", "MIDTRAIN_JOBS": "1"}, 2, (1, 2)),
        (3, {"CUDA_VISIBLE_DEVICES": "", "MIDTRAIN_JOBS": "2"}, 4, (2, 2)),
        (3, {"CUDA_VISIBLE_DEVICES": "", "MIDTRAIN_NPROC": "2"}, 2, (1, 2)),  # torchrun ranks use the cores
        (3, {"CUDA_VISIBLE_DEVICES": "", "MIDTRAIN_LAUNCH": "{}"}, 2, (1, 2)),  # Slurm jobs
    ],
)
def test_training_slots(runs: int, environ: dict[str, str], cores: int, expected: tuple[int, int]) -> None:
    assert training_slots(runs, environ, cores) == expected


def test_run_children_stops_the_others_when_one_fails(tmp_path: Path) -> None:
    import os
    import sys
    import time

    from midtrain.pipeline import run_children

    marker = tmp_path / "sleeper.pid"
    sleeper = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    failing = "import time; time.sleep(1); raise SystemExit(3)"
    started = time.monotonic()
    statuses = run_children([[sys.executable, "-c", sleeper], [sys.executable, "-c", failing]], cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert statuses[1] == 3 and statuses[0] != 0  # the sleeper was stopped, not waited out
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_run_children_returns_every_status(tmp_path: Path) -> None:
    import sys

    from midtrain.pipeline import run_children

    commands = [[sys.executable, "-c", f"raise SystemExit({code})"] for code in (0, 0, 0)]
    assert run_children(commands, cwd=tmp_path) == [0, 0, 0]


def test_a_bad_midtrain_jobs_is_a_message() -> None:
    from midtrain.errors import MidtrainError

    with pytest.raises(MidtrainError) as caught:
        training_slots(3, {"MIDTRAIN_JOBS": "two", "CUDA_VISIBLE_DEVICES": ""}, 2)
    assert "MIDTRAIN_JOBS" in str(caught.value.problems[0].message) or caught.value.problems[0].path == "MIDTRAIN_JOBS"
