"""Browsing commands: list, show, search, diff, compare, validate, lint, schema, cp."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from midtrain.cli import app, guarded
from midtrain.errors import MidtrainError

SORT_KEYS = ("id", "year", "tokens", "context", "params", "org")


def _complete_recipe(incomplete: str) -> list[str]:
    """Shell completion of recipe ids: file names only, so it stays instant."""
    from midtrain.catalog import find_root, recipe_files

    return [p.stem for p in recipe_files(find_root()) if p.stem.startswith(incomplete)]


def _catalog():  # type: ignore[no-untyped-def]
    from midtrain.catalog import load_catalog

    return load_catalog()


def _resolve(ref: str):  # type: ignore[no-untyped-def]
    """A recipe id from the catalogue, or a path to a recipe file (e.g. a customised copy)."""
    catalog = _catalog()
    path = Path(ref)
    if ref.endswith((".yaml", ".yml")) and path.exists():
        from midtrain.catalog import validate_paths

        recipes, problems = validate_paths([path], catalog.root)
        if problems:
            raise MidtrainError(problems)
        return recipes[0], catalog
    return catalog.get(ref), catalog


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command("list")
@guarded
def list_(
    objective: Optional[list[str]] = typer.Option(None, "--objective", "-o", help="Keep recipes targeting this capability (repeatable)."),
    technique: Optional[list[str]] = typer.Option(None, "--technique", "-t", help="Keep recipes using this technique (repeatable)."),
    org: Optional[str] = typer.Option(None, "--org", help="Keep recipes whose organisation contains this text."),
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Keep one model family (llama, qwen3, olmo2, ...)."),
    sort: str = typer.Option("id", "--sort", "-s", help=f"Sort by one of: {', '.join(SORT_KEYS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the catalogued recipes.

    [bold]Examples[/bold]

      midtrain list
      midtrain list --objective long-context --sort tokens
      midtrain list --technique model-souping --org ai2
      midtrain list --json | jq '.[].id'
    """
    from midtrain.catalog import cached_list_rows

    if sort not in SORT_KEYS:
        raise MidtrainError.single(f"unknown sort key {sort!r}", expected=", ".join(SORT_KEYS), found=sort)
    _check_vocab(objective, "objective")
    _check_vocab(technique, "technique")
    rows = cached_list_rows()
    if rows is None:
        from midtrain.summary import list_row

        rows = [list_row(r) for r in _catalog().all()]
    total = len(rows)
    if objective:
        rows = [r for r in rows if set(objective) & set(r["objectives"])]
    if technique:
        rows = [r for r in rows if set(technique) & set(r["techniques"])]
    if org:
        rows = [r for r in rows if org.lower() in r["organization"].lower()]
    if family:
        rows = [r for r in rows if r["family"] == family.lower()]
    key = {
        "id": lambda r: r["id"],
        "year": lambda r: (r["year"], r["id"]),
        "tokens": lambda r: (r["mid_training_tokens"] or 0, r["id"]),
        "context": lambda r: (r["final_context"], r["id"]),
        "params": lambda r: (r["parameters"], r["id"]),
        "org": lambda r: (r["organization"].lower(), r["id"]),
    }[sort]
    rows.sort(key=key)
    if as_json:
        _echo_json(rows)
        return
    from midtrain.cli.render import catalogue_table, console

    out = console()
    if not rows:
        out.print("[yellow]no recipe matches these filters[/yellow]")
        return
    out.print(catalogue_table(rows, out.width))
    out.print(f"[dim]{len(rows)} of {total} recipes · `midtrain show ID` for details[/dim]")


def _check_vocab(values: Optional[list[str]], kind: str) -> None:
    if not values:
        return
    from midtrain.schema.base import Capability, Technique

    enum = Capability if kind == "objective" else Technique
    allowed = [e.value for e in enum]
    for value in values or []:
        if value not in allowed:
            raise MidtrainError.single(f"unknown {kind} {value!r}", expected=", ".join(allowed), found=value)


@app.command()
@guarded
def show(
    recipe_id: str = typer.Argument(..., help="Recipe id (see `midtrain list`) or path to a recipe file.", autocompletion=_complete_recipe),
    as_json: bool = typer.Option(False, "--json", help="Print the validated recipe as JSON."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the recipe file as written."),
    provenance: bool = typer.Option(False, "--provenance", "-p", help="List every number with its source."),
) -> None:
    """Show one recipe: source, base, stages, mixtures, schedules, RoPE, merges, results.

    Every number carries a provenance mark: ● stated in the paper, ◐ derived from stated numbers,
    ○ assumed (the paper is silent), · untagged.

    [bold]Examples[/bold]

      midtrain show olmo-2-1124-7b
      midtrain show deepseek-v3 --provenance
      midtrain show qwen3-8b --json | jq '.stages[].rope'
    """
    recipe, catalog = _resolve(recipe_id)
    if as_json:
        _echo_json(recipe.model_dump(mode="json", exclude_none=True))
        return
    if as_yaml:
        path = catalog.paths.get(recipe.id) if recipe_id in catalog.recipes or recipe.id in catalog.recipes else None
        path = Path(recipe_id) if recipe_id.endswith((".yaml", ".yml")) else path
        typer.echo(Path(path).read_text(encoding="utf-8"), nl=False)
        return
    from midtrain.cli.render import console, legend, provenance_table, show as render_show
    from midtrain.summary import coverage, written_numbers

    out = console()
    if provenance:
        numbers = written_numbers(recipe)
        out.print(provenance_table(recipe, numbers))
        cov = coverage(recipe)
        out.print(f"{cov['numbers']} numbers · {cov['tagged']:.0%} with provenance · {cov['stated']:.0%} stated")
        out.print(legend())
        return
    out.print(render_show(recipe, catalog.registry, out.width))


def _haystack(recipe: Any, registry: Any) -> dict[str, str]:
    fields = {
        "id": recipe.id,
        "title": recipe.title,
        "organization": recipe.organization,
        "family": recipe.family.value,
        "architecture": recipe.architecture,
        "paper": f"{recipe.source.title} {recipe.source.arxiv or ''}",
        "objectives": " ".join(o.value for o in recipe.objectives),
        "techniques": " ".join(t.value for t in recipe.techniques),
        "notes": recipe.notes or "",
    }
    for stage in recipe.stages:
        fields[f"stage {stage.name}"] = " ".join(
            filter(None, [stage.name, stage.kind.value, stage.description or "", stage.mixture.note or "", stage.schedule.describe()])
        )
        for component in stage.mixture.components:
            source = registry.sources.get(component.source)
            fields[f"source {component.source}"] = f"{component.source} {source.description if source else ''} {source.hub_id or '' if source else ''}"
    return fields


@app.command()
@guarded
def search(
    text: list[str] = typer.Argument(..., help="Words to look for (all must match)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Full-text search over recipes and their data sources.

    Looks in ids, titles, papers, techniques, stage descriptions, notes and data sources.

    [bold]Examples[/bold]

      midtrain search yarn
      midtrain search souping math
      midtrain search "linear decay"
    """
    catalog = _catalog()
    words = [w.lower() for w in " ".join(text).split()]
    hits = []
    for recipe in catalog.all():
        fields = _haystack(recipe, catalog.registry)
        blob = " ".join(fields.values()).lower()
        if not all(w in blob for w in words):
            continue
        matched = [name for name, value in fields.items() if any(w in value.lower() for w in words)]
        score = sum(blob.count(w) for w in words)
        snippet = _snippet(" ".join(fields[m] for m in matched), words)
        hits.append({"id": recipe.id, "title": recipe.title, "score": score, "fields": matched, "snippet": snippet})
    hits.sort(key=lambda h: (-h["score"], h["id"]))
    if as_json:
        _echo_json(hits)
        return
    from rich.table import Table
    from rich.text import Text

    from midtrain.cli.render import console

    out = console()
    if not hits:
        out.print(f"[yellow]nothing matches {' '.join(text)!r}[/yellow]")
        raise typer.Exit(1)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("matched in", style="dim")
    table.add_column("context")
    for hit in hits:
        snippet = Text(hit["snippet"])
        for word in words:
            snippet.highlight_regex(re.escape(word), style="bold yellow", )
        table.add_row(hit["id"], ", ".join(hit["fields"][:3]), snippet)
    out.print(table)


def _snippet(text: str, words: list[str], width: int = 90) -> str:
    lower = text.lower()
    at = min((lower.find(w) for w in words if w in lower), default=0)
    start = max(0, at - width // 3)
    piece = text[start : start + width].replace("\n", " ")
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


@app.command()
@guarded
def diff(
    a: str = typer.Argument(..., help="Recipe id or file.", autocompletion=_complete_recipe),
    b: str = typer.Argument(..., help="Recipe id or file.", autocompletion=_complete_recipe),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Semantic difference of two recipes, stage by stage.

    Budgets, stage boundaries, LR at stage start, context and RoPE, and mixture deltas (by source,
    and by category when the sources differ).

    [bold]Examples[/bold]

      midtrain diff olmo-2-1124-7b llama-3.1-405b
      midtrain diff olmo-2-1124-7b my-recipes/olmo-2-1124-7b-more-math.yaml
    """
    from midtrain.summary import diff_recipes

    recipe_a, catalog = _resolve(a)
    recipe_b, _ = _resolve(b)
    result = diff_recipes(recipe_a, recipe_b, catalog.registry)
    if as_json:
        _echo_json(result)
        return
    from midtrain.cli.render import console, diff_view

    console().print(diff_view(result))


@app.command()
@guarded
def compare(
    ids: list[str] = typer.Argument(..., help="Two or more recipe ids or files.", autocompletion=_complete_recipe),
    fields: Optional[str] = typer.Option(None, "--fields", help="Comma-separated rows to show: names from the default set or dotted paths (e.g. base.peak_lr)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recipes side by side.

    [bold]Examples[/bold]

      midtrain compare olmo-2-1124-7b llama-3.1-405b deepseek-v3
      midtrain compare olmo-2-1124-7b qwen3-8b --fields mid_tokens,final_context,base.rope_theta
    """
    from midtrain.summary import COMPARE_FIELDS, compare_rows

    if len(ids) < 2:
        raise MidtrainError.single("compare needs at least two recipes", expected="two or more ids", found=str(len(ids)))
    pairs = [_resolve(i) for i in ids]
    recipes = [p[0] for p in pairs]
    wanted = [f.strip() for f in fields.split(",")] if fields else list(COMPARE_FIELDS)
    table = compare_rows(recipes, wanted, pairs[0][1].registry)
    if as_json:
        _echo_json({"recipes": [r.id for r in recipes], "rows": table})
        return
    from rich import box
    from rich.table import Table

    from midtrain.cli.render import console

    view = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    view.add_column("field", style="dim")
    for recipe in recipes:
        view.add_column(recipe.id, style="cyan" if False else None)
    for name, values in table.items():
        view.add_row(name, *[str(v) for v in values])
    console().print(view)


@app.command()
@guarded
def validate(
    paths: list[Path] = typer.Argument(None, help="Recipe files or directories (default: recipes/)."),
    migrate: bool = typer.Option(False, "--migrate", help="Rewrite files with an older schema_version in the current format."),
    strict: bool = typer.Option(False, "--strict", help="Also fail when a number has no provenance."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate recipes against the schema and the registry.

    Reports every problem at once, each with file, line and field path; exit status 1 when anything
    is wrong.

    [bold]Examples[/bold]

      midtrain validate
      midtrain validate my-recipes/ recipes/olmo-2/olmo-2-1124-7b.yaml
      midtrain validate --strict
    """
    from midtrain.catalog import find_root, validate_paths

    root = find_root()
    targets = list(paths) if paths else [root / "recipes"]
    if migrate:
        _migrate_files(targets)
    recipes, problems = validate_paths(targets, root)
    untagged: dict[str, list[str]] = {}
    if strict:
        from midtrain.summary import coverage

        for recipe in recipes:
            missing = coverage(recipe)["untagged"]
            if missing:
                untagged[recipe.id] = missing
    ok = not problems and not untagged
    if as_json:
        _echo_json(
            {
                "ok": ok,
                "valid": [r.id for r in recipes],
                "problems": [
                    {"file": str(p.file) if p.file else None, "line": p.line, "path": p.path, "message": p.message, "expected": p.expected, "found": p.found}
                    for p in problems
                ],
                "untagged": untagged,
            }
        )
        raise typer.Exit(0 if ok else 1)
    for problem in problems:
        typer.echo(problem.render(), err=True)
    for recipe_id, missing in untagged.items():
        for path in missing:
            typer.echo(f"{recipe_id}: {path}: number has no provenance entry", err=True)
    count = len(problems) + sum(len(v) for v in untagged.values())
    if ok:
        from midtrain.catalog import _split_registry_files

        registry_files = len(paths) - len(_split_registry_files(list(paths), Path.cwd())[0]) if paths else 0
        typer.echo(f"✓ {len(recipes)} recipe(s) valid" + (f", {registry_files} registry file(s) valid" if registry_files else ""))
    else:
        typer.echo(f"✗ {count} problem(s); {len(recipes)} recipe(s) valid", err=True)
        raise typer.Exit(1)


def _migrate_files(targets: list[Path]) -> None:
    from midtrain.schema.migrate import MigrationError, migrate as run_migrations
    from midtrain.yamlio import dump_yaml, load_yaml

    files = [f for t in targets for f in (sorted(t.rglob("*.yaml")) if t.is_dir() else [t])]
    for path in files:
        try:
            data, _ = load_yaml(path)
        except MidtrainError:
            continue  # validation reports it
        if not isinstance(data, dict):
            continue
        try:
            upgraded, steps = run_migrations(data)
        except MigrationError:
            continue
        if steps:
            write_atomic(path, dump_yaml(upgraded))
            typer.echo(f"migrated {path} from schema_version {steps[0]} to {steps[-1] + 1} (comments were not kept)")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
@guarded
def lint(
    min_tagged: float = typer.Option(0.95, help="Fail when the overall share of numbers with provenance is below this."),
    min_stated: float = typer.Option(0.80, help="Fail when the overall share of `stated` numbers is below this."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {tagged, stated, recipes: {id: {...}}}."),
) -> None:
    """Provenance coverage of the catalogue.

    Per recipe and overall: the share of numbers that say where they come from, and the share stated
    by the source.

    [bold]Examples[/bold]

      midtrain lint
      midtrain lint --json | jq .tagged
    """
    from midtrain.summary import coverage

    catalog = _catalog()
    per = {r.id: coverage(r) for r in catalog.all()}
    numbers = sum(c["numbers"] for c in per.values())
    tagged = sum(c["tagged"] * c["numbers"] for c in per.values()) / numbers if numbers else 1.0
    stated = sum(c["stated"] * c["numbers"] for c in per.values()) / numbers if numbers else 1.0
    ok = tagged >= min_tagged and stated >= min_stated
    if as_json:
        _echo_json({"tagged": round(tagged, 4), "stated": round(stated, 4), "numbers": numbers, "ok": ok, "recipes": per})
        raise typer.Exit(0 if ok else 1)
    from rich import box
    from rich.table import Table

    from midtrain.cli.render import console

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("recipe", "numbers", "tagged", "stated", "derived", "assumed", "untagged"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for recipe_id, c in per.items():
        table.add_row(
            recipe_id, str(c["numbers"]), f"{c['tagged']:.0%}", f"{c['stated']:.0%}",
            str(c["by_status"]["derived"]), str(c["by_status"]["assumed"]), str(len(c["untagged"])),
        )
    out = console()
    out.print(table)
    verdict = "[green]✓[/green]" if ok else "[red]✗[/red]"
    out.print(f"{verdict} overall: {tagged:.1%} of {numbers} numbers tagged (goal ≥ {min_tagged:.0%}), {stated:.1%} stated (goal ≥ {min_stated:.0%})")
    if not ok:
        raise typer.Exit(1)


SCHEMA_KINDS = ("recipe", "sources", "models", "scales")


def json_schema(kind: str = "recipe") -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a recipe file or a registry file."""
    from pydantic import TypeAdapter

    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import BaseModelEntry, DataSource, ScaleProfile

    if kind == "recipe":
        schema = Recipe.model_json_schema()
        title = "midtrain recipe"
    else:
        entry = {"sources": DataSource, "models": BaseModelEntry, "scales": ScaleProfile}[kind]
        schema = TypeAdapter(dict[str, entry]).json_schema()  # type: ignore[valid-type]
        title = f"midtrain registry: {kind}"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}


@app.command()
@guarded
def schema(
    kind: str = typer.Argument("recipe", help=f"Which schema: {', '.join(SCHEMA_KINDS)}."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write every schema as JSON files into this directory."),
) -> None:
    """Export the JSON Schema (draft 2020-12) of recipe and registry files, for YAML editors.

    With the YAML language server (VS Code's YAML extension, Neovim, Helix ...), put this first
    line in a recipe to get completion and checking as you type:

      # yaml-language-server: $schema=../../docs/schema/recipe.schema.json

    [bold]Examples[/bold]

      midtrain schema > recipe.schema.json
      midtrain schema sources
      midtrain schema --out docs/schema
    """
    if kind not in SCHEMA_KINDS:
        raise MidtrainError.single(f"unknown schema {kind!r}", expected=", ".join(SCHEMA_KINDS), found=kind)
    if out is not None:
        for name in SCHEMA_KINDS:
            filename = "recipe.schema.json" if name == "recipe" else f"registry-{name}.schema.json"
            write_atomic(out / filename, json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n")
            typer.echo(f"wrote {out / filename}")
        return
    _echo_json(json_schema(kind))


@app.command()
@guarded
def cp(
    recipe_id: str = typer.Argument(..., help="Recipe id to copy.", autocompletion=_complete_recipe),
    dest: Path = typer.Argument(..., help="Destination file or directory."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a recipe to customise it. The copy's id follows its file name, so it validates as is.

    [bold]Examples[/bold]

      midtrain cp olmo-2-1124-7b my-recipes/
      midtrain cp olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
      midtrain validate my-recipes/ && midtrain diff olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
    """
    catalog = _catalog()
    recipe = catalog.get(recipe_id)
    source = catalog.paths[recipe.id]
    target = dest / source.name if dest.is_dir() or str(dest).endswith(os.sep) else dest
    if target.suffix not in (".yaml", ".yml"):
        raise MidtrainError.single("destination must be a directory or a .yaml file", found=str(dest))
    if target.exists() and not force:
        raise MidtrainError.single("destination exists; pass --force to overwrite", file=target)
    text = source.read_text(encoding="utf-8")
    if target.stem != recipe.id:
        text, count = re.subn(r"(?m)^id:\s*\S+\s*$", f"id: {target.stem}", text, count=1)
        if count != 1:
            raise MidtrainError.single("could not find the id line to rewrite", file=source)
    text = re.sub(r"(?m)^# yaml-language-server: \$schema=.*$", f"# yaml-language-server: $schema={catalog.root / 'docs' / 'schema' / 'recipe.schema.json'}", text)
    write_atomic(target, text)
    typer.echo(f"copied {recipe.id} → {target}")
