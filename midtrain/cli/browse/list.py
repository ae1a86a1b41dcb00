"""`midtrain list`: the catalogue as a table or JSON, filtered and sorted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json, load_catalog
from midtrain.errors import MidtrainError

SORT_KEYS = ("id", "year", "tokens", "context", "params", "org")
SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "id": lambda r: r["id"],
    "year": lambda r: (r["year"], r["id"]),
    "tokens": lambda r: (r["mid_training_tokens"] or 0, r["id"]),
    "context": lambda r: (r["final_context"], r["id"]),
    "params": lambda r: (r["parameters"], r["id"]),
    "org": lambda r: (r["organization"].lower(), r["id"]),
}


@guarded
def list_(
    objective: list[str] | None = typer.Option(
        None, "--objective", "-o", help="Keep recipes targeting this capability (repeatable)."
    ),
    technique: list[str] | None = typer.Option(
        None, "--technique", "-t", help="Keep recipes using this technique (repeatable)."
    ),
    org: str | None = typer.Option(None, "--org", help="Keep recipes whose organisation contains this text."),
    family: str | None = typer.Option(None, "--family", "-f", help="Keep one model family (llama, qwen3, olmo2, ...)."),
    sort: str = typer.Option(
        "id",
        "--sort",
        "-s",
        help=f"Sort by one of: {', '.join(SORT_KEYS)} (tokens: mid-training tokens, pre-training phases left out).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the catalogued recipes.

    [bold]Examples[/bold]

      midtrain list
      midtrain list --objective long-context --sort tokens
      midtrain list --technique model-souping --org ai2
      midtrain list --json | jq '.[].id'
    """
    if sort not in SORT_KEYS:
        raise MidtrainError.single(f"unknown sort key {sort!r}", expected=", ".join(SORT_KEYS), found=sort)
    _check_vocab(objective, "objective")
    _check_vocab(technique, "technique")
    rows = _rows()
    total = len(rows)
    rows = _filtered(rows, objective, technique, org, family)
    rows.sort(key=SORTS[sort])
    if as_json:
        echo_json(rows)
        return
    from midtrain.cli.render import catalogue_table, console

    out = console()
    if not rows:
        out.print("[yellow]no recipe matches these filters[/yellow]")
        return
    out.print(catalogue_table(rows, out.width))
    out.print(f"[dim]{len(rows)} of {total} recipes · `midtrain show ID` for details[/dim]")
    keys = [
        text
        for key, text in (
            ("branches", "+N⑂ side branches (not in the token totals)"),
            ("unknowns", "N? values the sources do not give"),
            ("revisions", "N✎ errata"),
        )
        if any(row.get(key) for row in rows)
    ]
    if keys:
        out.print(f"[dim]{' · '.join(keys)}[/dim]")


def _rows() -> list[dict[str, Any]]:
    """Every recipe's list row: from the cache when nothing changed (no schema import), else validated."""
    from midtrain.catalog import cached_list_rows

    rows = cached_list_rows()
    if rows is None:
        from midtrain.summary import list_row

        rows = [list_row(r) for r in load_catalog().all()]
    return rows


def _filtered(
    rows: list[dict[str, Any]],
    objective: list[str] | None,
    technique: list[str] | None,
    org: str | None,
    family: str | None,
) -> list[dict[str, Any]]:
    if objective:
        rows = [r for r in rows if set(objective) & set(r["objectives"])]
    if technique:
        rows = [r for r in rows if set(technique) & set(r["techniques"])]
    if org:
        rows = [r for r in rows if org.lower() in r["organization"].lower()]
    if family:
        rows = [r for r in rows if r["family"] == family.lower()]
    return rows


def _check_vocab(values: list[str] | None, kind: str) -> None:
    if not values:
        return
    from midtrain.schema.base import Capability, Technique

    enum = Capability if kind == "objective" else Technique
    allowed = [e.value for e in enum]
    for value in values or []:
        if value not in allowed:
            raise MidtrainError.single(f"unknown {kind} {value!r}", expected=", ".join(allowed), found=value)


def register(app: typer.Typer) -> None:
    app.command("list")(list_)
