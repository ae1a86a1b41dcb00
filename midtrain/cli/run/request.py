"""The options `midtrain plan` and `midtrain reproduce` share, turned into a validated PlanRequest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from midtrain.plan.contract import Plan
    from midtrain.plan.request import PlanRequest

BASE_HELP = (
    "Your base model: a Hugging Face hub id (resolved through the HF cache, pinned to a commit) or a local directory."
)


def build_request(
    recipe_id: str,
    scale: str,
    overrides: list[str] | None,
    seed: int,
    base: str | None,
    revision: str | None,
    base_peak_lr: float | None,
    tokens: str | None,
    context: int | None,
    stand_in_data: bool,
    min_steps: int | None,
    eval_tasks: str | None,
    eval_include: list[Path] | None,
    eval_limit: int | None,
) -> PlanRequest:
    """The CLI options as a validated PlanRequest (the same object params.yaml holds)."""
    from pydantic import ValidationError

    from midtrain.plan.request import EvalChoice, OwnBase, PlanRequest

    base_options = bool(tokens or context or stand_in_data or base_peak_lr or revision)
    own: dict[str, Any] | None = None
    if base is not None or (scale == "full" and base_options):  # at full scale these describe the recipe's base
        own = {
            "model": base,
            "requested_revision": revision,
            "peak_lr": base_peak_lr,
            "tokens": tokens,
            "context": context,
            "stand_in_data": stand_in_data,
            **({"min_steps": min_steps} if min_steps else {}),
        }
    elif base_options:
        raise MidtrainError.single(
            "--base-peak-lr, --tokens, --context, --revision and --stand-in-data go with --base (or --scale full)",
            expected="--base HUB_ID|DIR",
        )
    options = {
        "base": "--base, --base-peak-lr, --tokens, --context",
        "recipe": "RECIPE_ID",
        "eval": "--eval-tasks / --eval-include",
        "seed": "--seed",
        "scale": "--scale",
    }
    try:
        choice = EvalChoice(
            tasks=[t.strip() for t in eval_tasks.split(",") if t.strip()] if eval_tasks else None,
            include=[str(p) for p in eval_include or []],
            limit=eval_limit,
        )
        return PlanRequest(
            recipe=recipe_id_only(recipe_id),
            scale=scale,
            seed=seed,
            overrides=list(overrides or []),
            base=OwnBase(**own) if own else None,
            eval=choice,
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise MidtrainError.single(
            f"{options.get(field, field)}: {err['msg']}", found=str(err.get("input"))[:80]
        ) from None


def recipe_id_only(text: str) -> str:
    """Recipe ids are ids, never paths: only `recipe.id` is ever written to params.yaml or used in a path."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,79}", text):
        raise MidtrainError.single(
            "RECIPE_ID must be a recipe id (`midtrain list` shows them), not a path",
            expected="lowercase letters, digits, '.', '_' and '-', e.g. olmo-2-1124-7b",
            found=text[:120],
        )
    return text


def planned(request: PlanRequest, resolve: bool) -> tuple[PlanRequest, Plan]:
    """(request, plan): the request with a hub-id base pinned to a commit when `resolve`, and its plan."""
    from midtrain.plan.api import make_plan, pin_base

    if resolve and request.base is not None and request.base.model:
        request = pin_base(request, Path.cwd())
    import os

    here = Path.cwd() if (Path.cwd() / "recipes").is_dir() and (Path.cwd() / "registry").is_dir() else None
    root = Path(os.environ["MIDTRAIN_HOME"]) if os.environ.get("MIDTRAIN_HOME") else here  # as find_root orders them
    return request, make_plan(request, root, resolve=resolve)
