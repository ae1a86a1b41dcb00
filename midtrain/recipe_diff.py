"""`midtrain diff` as plain data: overview fields, then stages paired by name and kind.

Stages are paired, not lined up by position: first the stages with the same name, then, among the
rest, stages of the same kind in their order, a side branch (`branch: true`) only with a side branch. A stage left without a partner is `removed` (only in
the first recipe) or `added` (only in the second). Position pairing compared OLMo 2's anneal with
Llama 3.1's long-context stage just because both came first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midtrain.summary import STAGE_DIFF_FIELDS, _overview, _same, stage_facts

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry
    from midtrain.schema.stage import Stage


def pair_stages(a: list[Stage], b: list[Stage]) -> list[tuple[int | None, int | None, str | None]]:
    """(index in a, index in b, paired by 'name' | 'kind' | None) for every stage of both lists.

    Ordered as `b` reads, with each stage only in `a` placed before the first pair that comes after
    it in `a`; stages only in `a` that come after every pair close the list.
    """
    partner: dict[int, tuple[int, str]] = {}  # b index -> (a index, how)
    taken: set[int] = set()
    a_by_name = {stage.name: i for i, stage in enumerate(a)}
    for j, stage in enumerate(b):
        i = a_by_name.get(stage.name)
        if i is not None:
            partner[j] = (i, "name")
            taken.add(i)
    for j, stage in enumerate(b):
        if j in partner:
            continue
        i = next(
            (
                i
                for i, other in enumerate(a)
                if i not in taken and other.kind == stage.kind and _branch(other) == _branch(stage)
            ),
            None,
        )
        if i is not None:
            partner[j] = (i, "kind")
            taken.add(i)
    out: list[tuple[int | None, int | None, str | None]] = []
    emitted: set[int] = set()
    for j in range(len(b)):
        if j not in partner:
            out.append((None, j, None))
            continue
        i, how = partner[j]
        for k in range(i):
            if k not in taken and k not in emitted:
                out.append((k, None, None))
                emitted.add(k)
        out.append((i, j, how))
    out.extend((k, None, None) for k in range(len(a)) if k not in taken and k not in emitted)
    return out


def _stage_changes(fa: dict[str, Any], fb: dict[str, Any]) -> dict[str, Any]:
    same_sources = set(fa["mixture"]) & set(fb["mixture"])
    by = "source" if same_sources else "category"
    ma = fa["mixture"] if by == "source" else fa["categories"]
    mb = fb["mixture"] if by == "source" else fb["categories"]
    return {
        "changes": [{"field": f, "a": fa[f], "b": fb[f]} for f in STAGE_DIFF_FIELDS if not _same(fa[f], fb[f])],
        "mixture_by": by,
        "mixture": [
            {"key": key, "a": ma.get(key, 0.0), "b": mb.get(key, 0.0), "delta": mb.get(key, 0.0) - ma.get(key, 0.0)}
            for key in sorted(set(ma) | set(mb))
            if abs(mb.get(key, 0.0) - ma.get(key, 0.0)) > 1e-9
        ],
    }


def diff_recipes(a: Recipe, b: Recipe, registry: Registry | None) -> dict[str, Any]:
    """What changes from `a` to `b`: overview fields, then each pair of stages (see `pair_stages`)."""
    over_a, over_b = _overview(a), _overview(b)
    overview = [{"field": k, "a": over_a[k], "b": over_b[k]} for k in over_a if not _same(over_a[k], over_b[k])]
    facts_a, facts_b = stage_facts(a, registry), stage_facts(b, registry)
    stages = []
    for index, (i, j, how) in enumerate(pair_stages(a.stages, b.stages)):
        fa = facts_a[i] if i is not None else None
        fb = facts_b[j] if j is not None else None
        entry: dict[str, Any] = {
            "index": index,
            "a": fa["name"] if fa else None,
            "b": fb["name"] if fb else None,
            "a_index": i,
            "b_index": j,
        }
        if fa and fb:
            entry["paired_by"] = how
            entry.update(_stage_changes(fa, fb))
        else:
            entry["only_in"] = "a" if fa else "b"
            entry["status"] = "removed" if fa else "added"
            entry["kind"] = (fa or fb or {}).get("kind")
        entry["branch"] = bool((fa or {}).get("branch") or (fb or {}).get("branch"))
        stages.append(entry)
    return {"a": a.id, "b": b.id, "overview": overview, "stages": stages}


def _branch(stage: Stage) -> bool:
    """A side branch (stand-ins in tests may leave the field out)."""
    return bool(getattr(stage, "branch", False))
