"""The one planning function that `midtrain plan`, `midtrain reproduce` and the pipeline's `plan`
stage share: request -> recipe with overrides -> typed plan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from midtrain.errors import MidtrainError
from midtrain.plan.contract import Plan
from midtrain.plan.request import PlanRequest

if TYPE_CHECKING:
    from midtrain.catalog import Catalog
    from midtrain.schema.recipe import Recipe


def recipe_for(request: PlanRequest, catalog: Catalog, where: Path | None = None) -> Recipe:
    """The request's recipe with its `--set` overrides applied and validated."""
    from pydantic import ValidationError

    from midtrain.plan.overrides import apply_overrides
    from midtrain.schema.recipe import Recipe
    from midtrain.yamlio import LineMap, problems_from_validation

    recipe = catalog.get(request.recipe)
    if not request.overrides:
        return recipe
    raw = apply_overrides(catalog.raw[recipe.id], list(request.overrides))
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from_validation(exc, where, LineMap(), data=raw, model=Recipe)
        for problem in problems:
            problem.message = f"after overrides {list(request.overrides)}: {problem.message}"
        raise MidtrainError(problems) from None
    missing = sorted({c.source for s in recipe.stages for c in s.mixture.components} - set(catalog.registry.sources))
    if missing:
        raise MidtrainError.single(
            f"after overrides: unknown data source {missing[0]!r} (option --set)",
            expected="a source in registry/sources.yaml",
            found=", ".join(missing),
        )
    if recipe.base.model not in catalog.registry.models:
        raise MidtrainError.single(
            f"after overrides: unknown base model {recipe.base.model!r} (option --set base.model=...)",
            expected=", ".join(sorted(catalog.registry.models)),
            found=recipe.base.model,
        )
    return recipe


def make_plan(request: PlanRequest, root: Path | None = None, resolve: bool = True, where: Path | None = None) -> Plan:
    from midtrain.catalog import load_catalog
    from midtrain.plan.planner import plan_request

    catalog = load_catalog(root) if root is not None else load_catalog()
    recipe = recipe_for(request, catalog, where)
    return plan_request(request, recipe, catalog.registry, catalog=catalog, root=root, resolve=resolve)


def pin_base(request: PlanRequest, root: Path) -> PlanRequest:
    """Resolve `--base` now and record the commit (hub id) or fingerprint (directory) in the request,
    so params.yaml changes, and DVC reruns, exactly when the base does."""
    from midtrain.plan.bases import resolve_base

    if request.base is None or request.base.model is None:
        return request
    asked = request.base.requested_revision or request.base.revision
    resolved = resolve_base(request.base.model, asked, root)
    base = request.base.model_copy(
        update={
            "revision": resolved.revision,
            "requested_revision": asked,
            "fingerprint": None if resolved.is_hub else resolved.fingerprint,
        }
    )
    return request.model_copy(update={"base": base})
