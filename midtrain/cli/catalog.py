"""`midtrain catalog markdown` and `midtrain catalog build`: the catalogue beyond the terminal."""

from __future__ import annotations

from pathlib import Path

import typer

from midtrain.cli.app import guarded

HELP = "Publish the catalogue: docs/catalog.md and a static HTML site."


@guarded
def markdown(out: Path | None = typer.Option(None, "--out", help="Write here (default: print).")) -> None:
    """The catalogue as Markdown (docs/catalog.md is generated with this).

    [bold]Examples[/bold]

      midtrain catalog markdown --out docs/catalog.md
    """
    from midtrain.catalog import load_catalog
    from midtrain.io import write_text
    from midtrain.publish import catalog_markdown

    text = catalog_markdown(load_catalog())
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text(out, text)
        typer.echo(f"wrote {out}")


@guarded
def build(out: Path = typer.Argument(..., help="Output directory for the static site.")) -> None:
    """A static HTML catalogue: a searchable, filterable, sortable table and a page per recipe with its
    mixture chart, LR schedule plot, stages and citations. Open index.html; no server needed.

    [bold]Examples[/bold]

      midtrain catalog build site/ && xdg-open site/index.html
    """
    from midtrain.catalog import load_catalog
    from midtrain.publish import build_site

    build_site(load_catalog(), out)
    typer.echo(f"wrote {out / 'index.html'}")


def register(app: typer.Typer) -> None:
    """Add the `catalog` group (markdown, build) to `app`."""
    catalog_app = typer.Typer(help=HELP, no_args_is_help=True)
    catalog_app.command("markdown")(markdown)
    catalog_app.command("build")(build)
    app.add_typer(catalog_app, name="catalog")
