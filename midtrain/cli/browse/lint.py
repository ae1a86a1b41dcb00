"""`midtrain lint`: provenance coverage, rules from real users' bugs, and the README's counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json, load_catalog

SHOWN_PER_RECIPE = 3  # findings of one rule printed per recipe; --json has them all


@guarded
def lint(
    min_tagged: float = typer.Option(
        0.97, help="Fail when the overall share of numbers with provenance is below this."
    ),
    min_stated: float = typer.Option(0.82, help="Fail when the overall share of `stated` numbers is below this."),
    strict: bool = typer.Option(False, "--strict", help="Also fail when any rule has a finding."),
    write_counts: Path | None = typer.Option(
        None,
        "--write-counts",
        help="Rewrite the generated counts region of this Markdown file (README.md) and exit.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print JSON: {tagged, stated, numbers, ok, recipes_count, organisations_count, ..., rules, recipes}.",
    ),
) -> None:
    """Provenance coverage of the catalogue, then rules drawn from real users' bugs.

    Coverage, per recipe and overall: the share of numbers that say where they come from, and the
    share stated by the source. Exit status 1 when a coverage goal is missed.

    Rules, each finding located by recipe, stage and field: repeat-beyond-max-epochs (a source
    repeated past its max_epochs, or over 10 epochs when none is given), init-not-previous (a stage
    that does not start from the previous stage's output and does not say why),
    anneal-without-decay (an anneal, decay or cooldown stage whose LR does not fall) and
    stated-third-party-only (a stated number cited only from a third-party copy). Findings are
    warnings: they fail the command only with --strict.

    --write-counts rewrites the README's catalogue counts (recipes, organisations, stages, registry
    sizes, numbers tagged and stated) between its counts:start and counts:end comments.

    [bold]Examples[/bold]

      midtrain lint
      midtrain lint --strict
      midtrain lint --json | jq '.rules | map_values(.count)'
      midtrain lint --write-counts README.md
    """
    from midtrain.lint_rules import lint_report

    catalog = load_catalog()
    report = lint_report(catalog, min_tagged, min_stated, strict)
    if write_counts is not None:
        from midtrain.io import write_text
        from midtrain.lint_rules import readme_with_counts

        text = write_counts.read_text(encoding="utf-8")
        updated = readme_with_counts(text, report)
        if updated != text:
            write_text(write_counts, updated)
        typer.echo(f"{'wrote' if updated != text else 'unchanged:'} {write_counts}")
        return
    if as_json:
        echo_json(report)
        raise typer.Exit(0 if report["ok"] else 1)
    from midtrain.cli.render import console

    out = console()
    out.print(_table(report["recipes"]))
    verdict = (
        "[green]✓[/green]" if report["tagged"] >= min_tagged and report["stated"] >= min_stated else "[red]✗[/red]"
    )
    out.print(
        f"{verdict} overall: {report['tagged']:.1%} of {report['numbers']} numbers tagged (goal ≥ {min_tagged:.0%}), "
        f"{report['stated']:.1%} stated (goal ≥ {min_stated:.0%})"
    )
    _print_rules(out, report["rules"], strict)
    if not report["ok"]:
        raise typer.Exit(1)


def _print_rules(out: Any, rules: dict[str, dict[str, Any]], strict: bool) -> None:
    from rich.markup import escape

    total = sum(r["count"] for r in rules.values())
    kind = "errors (--strict)" if strict else "warnings"
    out.print(f"\n[bold]rules[/bold]: {total} finding{'s' * (total != 1)}, reported as {kind}")
    for name, rule in rules.items():
        mark = "[green]✓[/green]" if not rule["count"] else ("[red]✗[/red]" if strict else "[yellow]![/yellow]")
        out.print(f"{mark} {name}: {rule['count']} — {escape(rule['summary'])}")
        by_recipe: dict[str, list[dict[str, Any]]] = {}
        for finding in rule["findings"]:
            by_recipe.setdefault(finding["recipe"], []).append(finding)
        for recipe, findings in by_recipe.items():
            for finding in findings[:SHOWN_PER_RECIPE]:
                where = " › ".join(p for p in (recipe, finding["stage"], finding["field"]) if p)
                out.print(f"    {escape(where)}: {escape(finding['message'])}", highlight=False)
            if len(findings) > SHOWN_PER_RECIPE:
                more = len(findings) - SHOWN_PER_RECIPE
                out.print(f"    {escape(recipe)}: … and {more} more (see --json)", highlight=False)


def _table(per: dict[str, dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("recipe", "numbers", "tagged", "stated", "derived", "assumed", "untagged"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for recipe_id, c in per.items():
        table.add_row(
            recipe_id,
            str(c["numbers"]),
            f"{c['tagged']:.0%}",
            f"{c['stated']:.0%}",
            str(c["by_status"]["derived"]),
            str(c["by_status"]["assumed"]),
            str(len(c["untagged"])),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("lint")(lint)
