"""Where a validation error sits in the file, and what the schema allows there.

Pydantic reports an error at a `loc` that mixes the keys of the data with the labels of union
members: `('stages', 0, 'schedule', 'wsd', 'peak_lr')`, `('stages', 0, 'batch', 'function-after[_some(),
Batch]', 'tokns')`. Walking the model's annotations along the loc, with the data beside it, tells
the two apart. That gives the data path (line numbers come from it, and names: `stages[anneal].
schedule.peak_lr`), the model that holds an unknown key (for "did you mean" and the list of allowed
fields), and the union members an error came through, so that members the data plainly was not
written for (the `'unknown'` of `batch: Batch | 'unknown'` next to a mapping) do not add noise.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from midtrain.errors import LocatedErrors, short

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

_SEQUENCES = (list, tuple, set, frozenset, Sequence)
_MAPPINGS = (dict, Mapping)


@dataclass
class Located:
    """One problem at a data path (keys and list indices, no union labels)."""

    path: Loc
    message: str
    expected: str | None = None
    found: str | None = None
    origin: Loc = ()  # the path of the value that failed (a model's, for the problems its checks report)
    kind: str = ""  # pydantic's error type ("extra_forbidden", ...); "" for a check's problem

    def key(self) -> tuple[Loc, str, str | None, str | None]:
        return self.path, self.message, self.expected, self.found


# ---------------------------------------------------------------- annotations


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _tag_name(discriminator: Any) -> str | None:
    """The tag field of a discriminator given as a name or as pydantic's Discriminator/FieldInfo."""
    while discriminator is not None and not isinstance(discriminator, str):
        discriminator = getattr(discriminator, "discriminator", None)
    return discriminator


def _strip(tp: Any, discriminator: Any) -> tuple[Any, str | None]:
    """Annotated[X, ...] -> X, keeping a discriminator found in the metadata."""
    name = _tag_name(discriminator)
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        for meta in args[1:]:
            name = _tag_name(getattr(meta, "discriminator", None)) or name
        tp = args[0]
    return tp, name


def alternatives(tp: Any, discriminator: Any = None) -> tuple[list[Any], str | None]:
    """The members of a union (None left out) and its discriminator; [tp] for anything else."""
    tp, discriminator = _strip(tp, discriminator)
    if not _is_union(tp):
        return [tp], None
    out: list[Any] = []
    for arg in get_args(tp):
        if arg is type(None):
            continue
        inner, inner_discriminator = alternatives(arg)
        out.extend(inner)
        discriminator = discriminator or inner_discriminator
    return out, (discriminator if len(out) > 1 else None)


def tags(model: Any, discriminator: str) -> list[str]:
    """The values of a tagged union member's tag field (`type: wsd`)."""
    info = model.model_fields.get(discriminator) if is_model(model) else None
    if info is None:
        return []
    tp, _ = _strip(info.annotation, None)
    if get_origin(tp) is Literal:
        return [str(arg) for arg in get_args(tp)]
    return [str(info.default)] if isinstance(info.default, str) else []


def choose(members: list[Any], discriminator: str | None, node: Any) -> list[Any]:
    """The members that `node` was written for: for a mapping, the models (the one its tag names)."""
    if not isinstance(node, Mapping):
        return members
    models = [m for m in members if is_model(m)]
    if discriminator and isinstance(node.get(discriminator), str):
        tagged = [m for m in models if node[discriminator] in tags(m, discriminator)]
        if tagged:
            return tagged
    return models or members


def model_field(model: Any, key: str | int) -> Any:
    """The FieldInfo of `key` in `model` (by name or alias), or None."""
    if not isinstance(key, str):
        return None
    fields = model.model_fields
    if key in fields:
        return fields[key]
    return next((info for info in fields.values() if info.alias == key), None)


def field_names(model: Any) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _children(tp: Any, part: str | int) -> list[tuple[Any, Any]]:
    """The annotation(s) one step down from `tp` at `part` (a field, an index or a key)."""
    if tp is Any:
        return [(Any, None)]
    if is_model(tp):
        info = model_field(tp, part)
        return [] if info is None else [(info.annotation, info.discriminator)]
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is tuple and isinstance(part, int):
        if len(args) == 2 and args[1] is Ellipsis:
            return [(args[0], None)]
        return [(args[part], None)] if 0 <= part < len(args) else []
    if origin in _SEQUENCES and isinstance(part, int):
        return [(args[0] if args else Any, None)]
    if origin in _MAPPINGS:
        return [(args[1] if len(args) == 2 else Any, None)]
    return []


def _label_matches(label: str, member: Any, discriminator: str | None) -> bool:
    """Whether pydantic's label for a union member (`'wsd'`, `'function-after[_some(), Batch]'`,
    `"literal['unknown']"`, `'int'`) names `member`."""
    if discriminator and is_model(member):
        return label in tags(member, discriminator)
    if get_origin(member) is Literal:
        return label.startswith("literal[")
    name = getattr(member, "__name__", None)
    if not name:
        return False
    return re.search(rf"(^|[\[, -]){re.escape(name)}\]*$", label) is not None


def _looks_like_label(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _child_node(node: Any, part: str | int) -> Any:
    if isinstance(node, Mapping):
        return node.get(part, _ABSENT) if isinstance(part, str) else _ABSENT
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


_ABSENT: Any = object()


@dataclass
class Walk:
    """What walking a pydantic loc found."""

    path: Loc  # the data path: keys and indices only
    labels: list[tuple[Loc, str, Any]] = field(default_factory=list)  # (union's path, member label, member or None)
    parents: list[Any] = field(default_factory=list)  # the model(s) that hold the last key of `path`
    here: list[tuple[Any, Any]] = field(default_factory=list)  # annotation(s) at `path`, with discriminators


def walk(annotation: Any, data: Any, loc: Sequence[str | int]) -> Walk:
    """Follow `loc` through `annotation` and `data` at once."""
    slots: list[tuple[Any, Any]] = [(annotation, None)]
    node = data
    path: list[str | int] = []
    labels: list[tuple[Loc, str, Any]] = []
    parents: list[Any] = []
    for part in loc:
        if part == "[key]":  # a dict key that failed its own validation: the path stays at the key
            continue
        expanded: list[Any] = []
        union: tuple[list[Any], str | None] | None = None
        for tp, discriminator in slots:
            members, union_discriminator = alternatives(tp, discriminator)
            if len(members) > 1:
                union = (members, union_discriminator)
            expanded.extend(members)
        if union is not None and isinstance(part, str):
            members, union_discriminator = union
            named = [m for m in members if _label_matches(part, m, union_discriminator)]
            labels.append((tuple(path), part, named[0] if len(named) == 1 else None))
            slots = [(m, None) for m in (named or choose(members, union_discriminator, node))]
            continue  # a labelled union: this part names the member, not a key of the data
        if not slots and _looks_like_label(part) and not (isinstance(node, Mapping) and part in node):
            continue  # past what the annotations describe: drop what looks like a validator's label
        parents = [tp for tp in expanded if is_model(tp)]
        slots = [child for tp in expanded for child in _children(tp, part)]
        path.append(part)
        node = _child_node(node, part)
    return Walk(tuple(path), labels, parents, slots)


def node_at(data: Any, path: Sequence[str | int]) -> Any:
    node = data
    for part in path:
        node = _child_node(node, part)
    return node


def strip_unknown(annotation: Any, data: Any, discriminator: Any = None) -> Any:
    """`data` without the keys that no model at their place declares (a typo then hides nothing else)."""
    return _known(annotation, data, discriminator, (), None)


def fix_typos(annotation: Any, data: Any) -> tuple[Any, set[Loc]]:
    """`data` as it was meant: an unknown key that is close to a field the mapping lacks stands for
    that field (`tokns` -> `tokens`); other unknown keys are left out. Returns the data and the paths
    of the fields stood in for."""
    meant: set[Loc] = set()
    return _known(annotation, data, None, (), meant), meant


def _close_field(key: str, model: Any, data: Mapping[str, Any], taken: set[str]) -> str | None:
    close = difflib.get_close_matches(key, field_names(model), n=1, cutoff=0.6)
    if close and close[0] not in data and close[0] not in taken:
        return close[0]
    return None


def _known(annotation: Any, data: Any, discriminator: Any, loc: Loc, meant: set[Loc] | None) -> Any:
    members, union_discriminator = alternatives(annotation, discriminator)
    if isinstance(data, Mapping):
        models = [m for m in choose(members, union_discriminator, data) if is_model(m)]
        if len(models) == 1:
            model = models[0]
            out: dict[Any, Any] = {}
            for key, value in data.items():
                name = key
                info = model_field(model, key)
                if info is None and meant is not None and isinstance(key, str):
                    name = _close_field(key, model, data, set(out)) or key
                    info = model_field(model, name)
                    if info is not None:
                        meant.add((*loc, name))
                if info is not None:
                    out[name] = _known(info.annotation, value, info.discriminator, (*loc, name), meant)
                elif model.model_config.get("extra") != "forbid":
                    out[key] = value
            return out
        maps = [m for m in members if get_origin(m) in _MAPPINGS]
        if len(maps) == 1:
            value_type = _children(maps[0], "")[0][0]
            return {key: _known(value_type, value, None, (*loc, key), meant) for key, value in data.items()}
        return data
    if isinstance(data, list):
        sequences = [m for m in members if get_origin(m) in _SEQUENCES]
        if len(sequences) == 1:
            out_list = []
            for index, item in enumerate(data):
                item_type = _children(sequences[0], index)
                out_list.append(_known(item_type[0][0], item, None, (*loc, index), meant) if item_type else item)
            return out_list
    return data


# ---------------------------------------------------------------- errors


_TYPE_KINDS = ("model_type", "model_attributes_type", "dict_type", "literal_error", "enum")


def _is_type_error(kind: str) -> bool:
    return kind in _TYPE_KINDS or kind.endswith(("_type", "_parsing"))


def _expected_text(err: ErrorDetails) -> str:
    kind = err.get("type", "")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "a mapping"
    text = err.get("msg", "").removeprefix("Input should be ").removeprefix("Value error, ")
    return text.split(", unable to")[0]


def _allowed(parents: list[Any]) -> tuple[str, list[str]]:
    """Who holds the key and the fields allowed there (the union of the variants' when unsure)."""
    names: list[str] = []
    for model in parents:
        names.extend(name for name in field_names(model) if name not in names)
    owner = parents[0].__name__ if len(parents) == 1 else ""
    return owner, names


def unknown_field(key: str, parents: list[Any]) -> tuple[str, str | None]:
    """ "unknown field 'tokns'; did you mean 'tokens'?" and "a Stage field; allowed: name, kind, ..."."""
    owner, allowed = _allowed(parents)
    message = f"unknown field {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    if not allowed:
        return message, "one of the fields documented in `midtrain schema`"
    return message, (f"a {owner} field; " if owner else "") + "allowed: " + ", ".join(allowed)


def _describe(err: ErrorDetails, found_walk: Walk) -> list[Located]:
    path = found_walk.path
    located = (err.get("ctx") or {}).get("error")
    if isinstance(located, LocatedErrors):
        return [Located(path + tuple(sub), message, origin=path, kind="check") for sub, message in located.items]
    kind = err.get("type", "")
    message = err.get("msg", "invalid value")
    expected = None
    found = None
    if "input" in err and kind != "missing":
        found = short(err["input"])
    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        message, expected = unknown_field(key, found_walk.parents)
        found = key
    elif kind == "union_tag_not_found":
        tag = str((err.get("ctx") or {}).get("discriminator", "type")).strip("'")
        message = f"required field {tag!r} is missing (it says which kind this is)"
        choices = [t for tp, _ in found_walk.here for m in alternatives(tp)[0] for t in tags(m, tag)]
        expected = f"{tag}: one of " + ", ".join(choices) if choices else None
    elif _is_type_error(kind) and kind not in ("literal_error", "enum"):
        expected = _expected_text(err)
        message = "wrong type"
    elif kind in ("literal_error", "enum", "union_tag_invalid"):
        expected = message.replace("Input should be ", "").replace("Input tag ", "tag ")
        message = "not an allowed value"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return [Located(path, message, expected, found, origin=path, kind=kind)]


def _union_groups(walked: list[tuple[ErrorDetails, Walk]]) -> dict[Loc, dict[str, Any]]:
    groups: dict[Loc, dict[str, Any]] = {}
    for _, found in walked:
        for place, label, member in found.labels:
            groups.setdefault(place, {})[label] = member
    return groups


def _pick_members(walked: list[tuple[ErrorDetails, Walk]], data: Any) -> tuple[list[int], list[Located]]:
    """Errors from the members of an (untagged) union that the data was not written for are dropped:
    next to a mapping, only the model members' errors count; a scalar that fits no member is one
    problem that lists what each member takes. Returns the indices kept and the combined problems."""
    keep = set(range(len(walked)))
    combined: list[Located] = []
    by_place: dict[Loc, list[tuple[int, str]]] = {}
    for index, (_, found) in enumerate(walked):
        for place, label, _member in found.labels:
            by_place.setdefault(place, []).append((index, label))
    for place, members in sorted(_union_groups(walked).items(), key=lambda item: len(item[0])):
        if len(members) < 2:
            continue
        through = [(index, label) for index, label in by_place[place] if index in keep]
        if not through:
            continue
        node = node_at(data, place)
        if isinstance(node, Mapping):
            wanted = {label for label, member in members.items() if is_model(member)}
            if wanted:
                keep -= {index for index, label in through if label not in wanted}
            continue
        errors = [walked[index][0] for index, _ in through]
        texts: list[str] = []
        for err in errors:
            text = _expected_text(err)
            if text not in texts:
                texts.append(text)
        message = "wrong type" if all(_is_type_error(e.get("type", "")) for e in errors) else "invalid value"
        shown = None if node is _ABSENT else short(node)
        combined.append(Located(place, message, " or ".join(texts), shown, place, kind="union"))
        keep -= {index for index, _ in through}
    return sorted(keep), combined


def locate_errors(errors: Sequence[ErrorDetails], data: Any, annotation: Any) -> list[Located]:
    """Pydantic's errors as problems at data paths, with union noise removed and unknown keys explained."""
    walked = [(err, walk(annotation, data, err.get("loc", ()))) for err in errors]
    kept, combined = _pick_members(walked, data)
    out: list[Located] = []
    for index in kept:
        out.extend(_describe(*walked[index]))
    out.extend(combined)
    return out
