"""One pass over a recipe that does not validate: every check that can run, runs.

Pydantic skips a model's `after` validators as soon as one of its fields fails, so a stage's budget
arithmetic, a mixture's shares and the recipe's cross-references used to be reported only once every
field was right, a round of fixes at a time. When `Recipe.model_validate` fails, `recipe_problems`:

1. reports pydantic's errors at data paths (`locate.py`);
2. rebuilds each model that has a failing value or an unknown key below it from the values that do
   validate (unknown keys left out) and runs its checks (its `after` validators) on that. A check
   that reads a failing value cannot run; the model's `_*_problems` helpers then run one by one (a
   stage's batch arithmetic does not need its broken `tokens`). A field whose key is misspelt
   (`tokns`) counts as failing, not as absent: "give the budget as tokens or steps" would only
   repeat the typo;
3. runs the recipe-level checks (stage names, `init`, merges, `final`, the field paths of provenance,
   contradictions, reported values and revisions) on the plain data as it was meant (a misspelt key
   stands for the field it is close to), item by item, so that a broken stage hides neither its
   neighbours nor their references. `Recipe._cross_checks` runs the same functions on a valid
   recipe's dump.

A check whose input failed is not run, so nothing is reported as a consequence of a reported problem.
A valid recipe never comes here: the catalogue loads through `Recipe.model_validate` alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from midtrain.errors import FieldProblem, LocatedErrors
from midtrain.schema.locate import (
    Loc,
    Located,
    alternatives,
    choose,
    fix_typos,
    is_model,
    locate_errors,
    strip_unknown,
)
from midtrain.schema.provenance import path_aliases

BROKEN: Any = object()
"""A value that did not validate: checks that read it do not run."""

_OMIT: Any = object()

# ---------------------------------------------------------------- one value at a time


@cache
def _field_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """A model with field `name` of `model` alone: it validates that field exactly as `model` does."""
    info = copy.copy(model.model_fields[name])
    annotation: Any = Any if info.annotation is None else info.annotation
    wrapper: type[BaseModel] = create_model(
        f"{model.__name__}_{name}", __config__=model.model_config, value=(annotation, info)
    )
    return wrapper


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    try:
        adapter = _ADAPTERS.get(tp)
    except TypeError:  # an annotation that cannot be a dict key
        return TypeAdapter(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


def validate_field(model: type[BaseModel], name: str, value: Any) -> Any:
    """Field `name` of `model` validated on its own; BROKEN when it does not validate."""
    try:
        return getattr(_field_model(model, name).model_validate({"value": value}), "value")  # noqa: B009
    except ValidationError:
        return BROKEN


def field_value(model: type[BaseModel], name: str, item: Any) -> Any:
    """Field `name` of the plain mapping `item` as `model` would hold it (unknown keys left out):
    its default when absent, BROKEN when it does not validate or `item` is not a mapping."""
    if not isinstance(item, Mapping):
        return BROKEN
    info = model.model_fields[name]
    if name not in item:
        return BROKEN if info.is_required() else info.get_default(call_default_factory=True)
    return validate_field(model, name, strip_unknown(info.annotation, item[name], info.discriminator))


def _validate_item(tp: Any, value: Any) -> Any:
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError:
        return BROKEN


def _sequence_type(members: list[Any]) -> Any:
    sequences = [m for m in members if get_origin(m) in (list, tuple)]
    return sequences[0] if len(sequences) == 1 else None


def _item_type(sequence: Any, index: int) -> Any:
    args = get_args(sequence)
    if get_origin(sequence) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return args[index] if index < len(args) else Any
    return args[0] if args else Any


def _value_type(members: list[Any]) -> Any:
    maps = [m for m in members if get_origin(m) is dict]
    if len(maps) != 1:
        return None
    args = get_args(maps[0])
    return args[1] if len(args) == 2 else Any


# ---------------------------------------------------------------- models rebuilt from what validates


class _Partial:
    """Rebuilds models around values that failed and runs the checks pydantic skipped because of them."""

    def __init__(self, failed: set[Loc], unknown: set[Loc]):
        self.failed = failed
        self.tainted = {loc[:cut] for loc in failed | unknown for cut in range(len(loc) + 1)}
        self.found: list[FieldProblem] = []

    def field(self, model: type[BaseModel], name: str, value: Any, loc: Loc) -> Any:
        if loc not in self.tainted:
            return validate_field(model, name, value)
        info = model.model_fields[name]
        return self.typed(info.annotation, info.discriminator, value, loc)

    def item(self, tp: Any, value: Any, loc: Loc) -> Any:
        return _validate_item(tp, value) if loc not in self.tainted else self.typed(tp, None, value, loc)

    def typed(self, tp: Any, discriminator: Any, value: Any, loc: Loc) -> Any:
        if loc in self.failed:
            return BROKEN
        members, union_discriminator = alternatives(tp, discriminator)
        if isinstance(value, Mapping):
            models = [m for m in choose(members, union_discriminator, value) if is_model(m)]
            if len(models) == 1:
                return self.model(models[0], value, loc)
            value_type = _value_type(members)
            if value_type is None:
                return BROKEN
            out = {key: self.item(value_type, item, (*loc, key)) for key, item in value.items()}
            return BROKEN if any(v is BROKEN for v in out.values()) else out
        sequence = _sequence_type(members)
        if isinstance(value, list) and sequence is not None:
            items = [self.item(_item_type(sequence, i), item, (*loc, i)) for i, item in enumerate(value)]
            if any(v is BROKEN for v in items):
                return BROKEN
            return tuple(items) if get_origin(sequence) is tuple else items
        return BROKEN

    def model(self, model: type[BaseModel], value: Mapping[str, Any], loc: Loc, check: bool = True) -> Any:
        values: dict[str, Any] = {}
        broken: list[str] = []
        for name, info in model.model_fields.items():
            key = info.alias or name
            if (*loc, key) in self.failed:
                broken.append(name)
            elif key in value:
                built = self.field(model, name, value[key], (*loc, key))
                if built is BROKEN:
                    broken.append(name)
                else:
                    values[name] = built
            elif info.is_required():
                broken.append(name)
        if not check:
            return BROKEN
        instance = model.model_construct(**values)
        for name in broken:
            instance.__dict__.pop(name, None)  # reading it raises AttributeError: the check cannot run
        return instance if self.run_checks(model, instance, loc) else BROKEN

    def run_checks(self, model: type[BaseModel], instance: BaseModel, loc: Loc) -> bool:
        """The model's `after` validators on the rebuilt instance; True when all ran and passed."""
        passed = True
        for decorator in model.__pydantic_decorators__.model_validators.values():
            if decorator.info.mode != "after":
                continue
            try:
                decorator.func(instance)
            except LocatedErrors as exc:
                self.found += [((*loc, *path), message) for path, message in exc.items]
                passed = False
            except (ValueError, AssertionError) as exc:
                self.found.append((loc, str(exc)))
                passed = False
            except Exception:  # it read a value that failed: run the checks that can run on their own
                self.found += self.helpers(model, instance, loc)
                passed = False
        return passed

    @staticmethod
    def helpers(model: type[BaseModel], instance: BaseModel, loc: Loc) -> list[FieldProblem]:
        """The model's `_*_problems` methods, each on its own (those that read a failed value are skipped)."""
        found: list[FieldProblem] = []
        seen: set[str] = set()
        for klass in model.__mro__:
            for name, attribute in vars(klass).items():
                if name in seen or not (name.startswith("_") and name.endswith("_problems")) or not callable(attribute):
                    continue
                seen.add(name)
                try:
                    found += [((*loc, *path), message) for path, message in getattr(instance, name)()]
                except Exception:
                    continue
        return found


# ---------------------------------------------------------------- recipe-level checks on plain data


def _text(item: Any, key: str, default: str | None = None) -> str | None:
    """The string at `key` of a plain mapping (`default` when absent); None when it is not a string."""
    if not isinstance(item, Mapping):
        return None
    value = item.get(key, default)
    return value if isinstance(value, str) else None


def _items(data: Any, key: str) -> list[Any]:
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, list) else []


def _stage(raw: Any) -> Any:
    """A stage as the model holds it, or None when it does not validate (unknown keys left out)."""
    from midtrain.schema.stage import Stage

    try:
        return Stage.model_validate(strip_unknown(Stage, raw))
    except ValidationError:
        return None


def cross_problems(raw: Mapping[str, Any], aliases: dict[str, str] | None = None) -> list[FieldProblem]:
    """`Recipe._cross_checks` on plain data: each check runs where the values it reads are valid.
    `aliases` are the recipe's field paths when the caller has them (a validated recipe's dump)."""
    return _stage_problems(raw) + _merge_problems(raw) + _path_problems(raw, aliases)


def _stage_problems(raw: Mapping[str, Any]) -> list[FieldProblem]:
    from midtrain.schema.recipe import Base
    from midtrain.schema.rope import Rope
    from midtrain.schema.stage import Stage

    problems: list[FieldProblem] = []
    stages = _items(raw, "stages")
    merge_names = {name for m in _items(raw, "merges") if (name := _text(m, "name")) is not None}
    base = raw.get("base")
    default_init = Stage.model_fields["init"].default
    names: set[str] = set()
    for index, stage in enumerate(stages):
        name = _text(stage, "name")
        init = _text(stage, "init", default_init)
        if name is not None and name in names:
            problems.append((("stages", index, "name"), f"stage name {name!r} is used twice"))
        if init is not None and init not in ("base", "previous") and init not in names and init not in merge_names:
            problems.append(
                (("stages", index, "init"), f"{init!r} is not an earlier stage, a merge, 'base' or 'previous'")
            )
        if init is not None:
            problems += _branch_problems(index, stage, init, stages[:index], merge_names)
        schedule = stage.get("schedule") if isinstance(stage, Mapping) else None
        if _text(schedule, "type") == "from_base" and isinstance(base, Mapping) and base.get("lr_at_end") is None:
            problems.append((("stages", index, "schedule"), "a from_base schedule needs base.lr_at_end"))
        rope = field_value(Stage, "rope", stage)
        # With its own original context the scaling is checked by the stage (`Stage._rope_problems`).
        if isinstance(rope, Rope) and rope.capacity(None) is None:
            context = field_value(Base, "context_length", base)
            length = field_value(Stage, "sequence_length", stage)
            capacity = None if context is BROKEN else rope.capacity(context)
            if capacity is not None and length is not BROKEN and length > capacity:
                problems.append(
                    (
                        ("stages", index, "rope"),
                        f"sequence_length {length:,} exceeds what the scaling covers ({capacity:,} = base context × factor)",
                    )
                )
        if name is not None:
            names.add(name)
    return problems


def _branch_problems(
    index: int, stage: Any, init: str, earlier: list[Any], merge_names: set[str]
) -> list[FieldProblem]:
    """A branch point (init_at) must lie inside a named earlier stage."""
    from midtrain.schema.stage import Stage

    init_at = field_value(Stage, "init_at", stage)
    if init_at is None or init_at is BROKEN:
        return []
    parent = next((s for s in earlier if _text(s, "name") == init), None)
    if parent is None:
        if init in merge_names or init in ("base", "previous"):
            return [(("stages", index, "init_at"), f"init_at needs init to name an earlier stage, found {init!r}")]
        return []
    built = _stage(parent)
    budget = None if built is None else built.total_tokens()
    at = init_at.tokens
    if at is not None and budget is not None and at >= budget:
        return [
            (
                ("stages", index, "init_at", "tokens"),
                f"branch point {at:.4g} tokens is not inside {init!r} ({budget:.4g} tokens)",
            )
        ]
    return []


def _merge_problems(raw: Mapping[str, Any]) -> list[FieldProblem]:
    from midtrain.schema.recipe import MergeInput
    from midtrain.schema.stage import Runs, Stage

    problems: list[FieldProblem] = []
    stages_by_name: dict[str, Any] = {}
    for stage in _items(raw, "stages"):
        name = _text(stage, "name")
        if name is not None:
            stages_by_name.setdefault(name, stage)
    known = set(stages_by_name)
    for index, merge in enumerate(_items(raw, "merges")):
        name = _text(merge, "name")
        if name is not None and name in known:
            problems.append((("merges", index, "name"), f"name {name!r} is already used by a stage or merge"))
        for j, item in enumerate(_items(merge, "inputs")):
            ref = _text(item, "stage")
            if ref is None:
                continue
            if ref not in known:
                problems.append((("merges", index, "inputs", j, "stage"), f"{ref!r} is not a stage or earlier merge"))
                continue
            source = stages_by_name.get(ref)
            run = field_value(MergeInput, "run", item)
            runs = field_value(Stage, "runs", source)
            if source is not None and isinstance(run, int) and isinstance(runs, Runs) and run >= runs.count:
                problems.append((("merges", index, "inputs", j, "run"), f"run {run} but {ref!r} has {runs.count} runs"))
        if name is not None:
            known.add(name)
    final = _text(raw, "final")
    if final is not None and final not in known:
        problems.append((("final",), f"{final!r} is not a stage or merge"))
    return problems


def _path_problems(raw: Mapping[str, Any], aliases: dict[str, str] | None = None) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    aliases = recipe_paths(raw) if aliases is None else aliases
    provenance = raw.get("provenance")
    for path in provenance if isinstance(provenance, Mapping) else ():
        if isinstance(path, str) and path not in aliases:
            problems.append(
                (("provenance", path), f"{path!r} is not a field of this recipe (check the stage/source names)")
            )
    for index, contradiction in enumerate(_items(raw, "contradictions")):
        for path in _items(contradiction, "about"):
            if isinstance(path, str) and path not in aliases:
                problems.append((("contradictions", index, "about"), f"{path!r} is not a field of this recipe"))
    for field in ("reported", "revisions"):
        for index, item in enumerate(_items(raw, field)):
            path = _text(item, "path")
            if path is not None and path not in aliases:
                problems.append(((field, index, "path"), f"{path!r} is not a field of this recipe"))
    stage_names = {name for stage in _items(raw, "stages") if (name := _text(stage, "name")) is not None}
    for index, result in enumerate(_items(raw, "results")):
        at = result.get("at") if isinstance(result, Mapping) else None
        stage = _text(at, "stage")
        if stage is not None and stage not in stage_names:
            problems.append((("results", index, "at", "stage"), f"{stage!r} is not a stage"))
    return problems


# ---------------------------------------------------------------- the paths a recipe has


def recipe_paths(raw: Mapping[str, Any]) -> dict[str, str]:
    """path_aliases of what `Recipe.model_dump(mode="json", exclude_none=True)` would give for `raw`
    (provenance and contradictions left out), also where some values do not validate: those keep
    their place. Unknown keys have no path."""
    from midtrain.schema.recipe import Recipe

    left_out = ("provenance", "contradictions")
    dumped = _dump_model(Recipe, {key: value for key, value in raw.items() if key not in left_out})
    return path_aliases({key: value for key, value in dumped.items() if key not in left_out})


def _dump_field(model: type[BaseModel], name: str, value: Any) -> Any:
    try:
        built = _field_model(model, name).model_validate({"value": value})
    except ValidationError:
        info = model.model_fields[name]
        return _dump_typed(info.annotation, info.discriminator, value)
    return built.model_dump(mode="json", exclude_none=True).get("value", _OMIT)


def _dump_item(tp: Any, value: Any) -> Any:
    try:
        adapter = _adapter(tp)
        return adapter.dump_python(adapter.validate_python(value), mode="json", exclude_none=True)
    except ValidationError:
        return _dump_typed(tp, None, value)


def _dump_typed(tp: Any, discriminator: Any, value: Any) -> Any:
    members, union_discriminator = alternatives(tp, discriminator)
    if isinstance(value, Mapping):
        models = [m for m in choose(members, union_discriminator, value) if is_model(m)]
        if len(models) == 1:
            return _dump_model(models[0], value)
        value_type = _value_type(members)
        return {key: _dump_item(value_type or Any, item) for key, item in value.items()}
    sequence = _sequence_type(members)
    if isinstance(value, list) and sequence is not None:
        return [_dump_item(_item_type(sequence, i), item) for i, item in enumerate(value)]
    return value


def _dump_model(model: type[BaseModel], value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in value:
            item = value[key]
            dumped = _OMIT if item is None else _dump_field(model, name, item)
        elif info.is_required():
            continue
        else:
            default = info.get_default(call_default_factory=True)
            dumped = _OMIT if default is None else _dump_field(model, name, default)
        if dumped is not _OMIT:
            out[key] = dumped
    return out


# ---------------------------------------------------------------- all of it


def recipe_problems(raw: Mapping[str, Any], exc: ValidationError) -> list[Located]:
    """Every problem of a recipe that failed `Recipe.model_validate`, each once."""
    from midtrain.schema.recipe import Recipe

    found = locate_errors(exc.errors(include_url=False), raw, Recipe)
    failed = {problem.origin for problem in found if problem.kind != "extra_forbidden"}
    if () not in failed:  # the recipe's own checks were skipped: run what can run
        meant, misspelt = fix_typos(Recipe, raw)
        unknown = {problem.origin for problem in found if problem.kind == "extra_forbidden"}
        partial = _Partial(failed | misspelt, unknown)
        partial.model(Recipe, raw, (), check=False)
        found += [Located(path, message, origin=path, kind="check") for path, message in partial.found]
        found += [Located(path, message, origin=path, kind="check") for path, message in cross_problems(meant)]
    once: dict[tuple[Any, ...], Located] = {}
    for problem in found:
        once.setdefault(problem.key(), problem)
    return list(once.values())


__all__ = ["BROKEN", "cross_problems", "field_value", "recipe_paths", "recipe_problems", "validate_field"]
