"""Rich rendering of recipes: the catalogue table, `show`, `diff`, `compare`, provenance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from midtrain.lineage import theta_at_start
from midtrain.units import fmt_context, fmt_tokens, human_count

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import JustifyMethod, RenderableType

    from midtrain.schema.provenance import Entry
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry
    from midtrain.schema.rope import Rope
    from midtrain.schema.stage import Optimizer, Stage

MARKS = {"stated": "●", "derived": "◐", "assumed": "○", None: "·"}

STATUS_STYLE = {"stated": "green", "derived": "yellow", "assumed": "magenta", None: "red"}
CATEGORY_STYLE = {
    "web": "blue",
    "general": "blue",
    "academic": "cyan",
    "encyclopedic": "cyan",
    "math": "green",
    "code": "yellow",
    "reasoning": "magenta",
    "qa": "bright_magenta",
    "instruction": "bright_cyan",
    "long-context": "red",
    "multilingual": "bright_blue",
}
BAR_WIDTH = 28


def console() -> Console:
    """stdout; when it is not a terminal (a pipe, a log, CI) tables get room instead of 80 columns."""
    import sys

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


STRENGTH: tuple[str | None, ...] = ("stated", "derived", "assumed", None)  # strongest first
BOUND_PREFIX = {"approximate": "≈", "lower": "≥", "upper": "≤"}
DEFAULT_MARK = "□"


class Marker:
    """Attaches a provenance mark to every number shown for one recipe.

    A line may show several numbers (`rope` shows θ and every scaling parameter): its mark is the
    weakest status among the numbers the file writes under that path, each read from its own entry
    or the nearest ancestor's, so `rope.scaling.factor: stated` marks the RoPE line ● when every
    number under `rope` is stated, and ◐/○/· as soon as one is weaker. A bound on the entry
    (`bound: approximate | lower | upper`) prefixes the value with ≈, ≥ or ≤ (≈ when they differ).
    Schema defaults, which the file does not write, are shown dim with □ instead of a mark.
    """

    def __init__(self, recipe: Recipe):
        from midtrain.schema.provenance import numeric_items

        self.entries = recipe.canonical_provenance()
        data = recipe.model_dump(mode="json", exclude_unset=True, exclude={"provenance", "contradictions"})
        self.written = [path for path, _ in numeric_items(data)]

    def entry(self, path: str) -> Entry | None:
        from midtrain.schema.provenance import covering_entry

        hit = covering_entry(path, self.entries)
        return hit[1] if hit else None

    def entries_under(self, path: str) -> list[Entry | None]:
        """The entry of every number written at or under `path`; with none written, the entries given
        below `path` (words such as a schedule's decay shape), else the entry covering `path`."""
        below = (path + ".", path + "[")
        leaves = [p for p in self.written if p == path or p.startswith(below)]
        if leaves:
            return [self.entry(p) for p in leaves]
        given: list[Entry | None] = [e for key, e in self.entries.items() if key.startswith(below)]
        return given or [self.entry(path)]

    def status(self, path: str) -> str | None:
        """The weakest status among the numbers under `path` (None: one of them is untagged)."""
        statuses = [e.status if e else None for e in self.entries_under(path)]
        return max(statuses, key=STRENGTH.index)

    def bound(self, path: str) -> str:
        bounds = {e.bound for e in self.entries_under(path) if e is not None and e.bound != "exact"}
        if not bounds:
            return ""
        return BOUND_PREFIX[bounds.pop()] if len(bounds) == 1 else "≈"

    def __call__(self, text: str, path: str) -> Text:
        status = self.status(path)
        out = Text(self.bound(path) + text)
        out.append(MARKS[status], style=STATUS_STYLE[status])
        return out

    @staticmethod
    def default(text: str) -> Text:
        """A schema default: the recipe does not state it."""
        return Text(text, style="dim").append(DEFAULT_MARK, style="dim")

    def field(self, model: Any, name: str, text: str, path: str) -> Text:
        """`text` marked with the provenance of `path` if the file sets `name` on `model`, else as a default."""
        return self(text, path) if name in model.model_fields_set else self.default(text)


def legend() -> Text:
    text = Text("provenance: ", style="dim")
    for status in ("stated", "derived", "assumed", None):
        text.append(MARKS[status], style=STATUS_STYLE[status])
        text.append(f" {status or 'untagged'}  ", style="dim")
    text.append(DEFAULT_MARK, style="dim")
    text.append(" schema default (not in the recipe)  ", style="dim")
    text.append("≈ about  ≥ at least  ≤ at most", style="dim")
    text.append("\na mark after several numbers is the weakest of theirs: ● only when all are stated", style="dim")
    return text


def _context(tokens: int, path: str, mark: Marker) -> Text:
    """'131,072● (128K)': the exact count, marked, and its short form (see midtrain.units.fmt_context)."""
    out = mark(f"{tokens:,}", path)
    short = fmt_context(tokens)
    if short != f"{tokens:,}":
        out.append(f" ({short})", style="dim")
    return out


def catalogue_table(rows: list[dict[str, Any]], width: int = 120) -> Table:
    """The catalogue; on narrow terminals the organisation (< 100 columns) and objectives (< 120) are left out."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("id", "left"),
        ("model", "left"),
        ("org", "left"),
        ("year", "right"),
        ("stages", "right"),
        ("mid-training tokens", "right"),
        ("context", "right"),
        ("objectives", "left"),
    ]
    if width < 120:
        columns.pop()
    if width < 100:
        columns.pop(2)
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=column != "objectives")
    for row in rows:
        cells: list[Text | str] = [
            Text(row["id"], style="bold cyan"),
            f"{row['model']} {human_count(row['parameters'])}",
            short_org(row["organization"]),
            str(row["year"]),
            str(row["stages"]),
            fmt_tokens(row["mid_training_tokens"]),
            fmt_context(row["final_context"]),
            ", ".join(row["objectives"]),
        ]
        if width < 100:
            cells = cells[:2] + cells[3:]
        table.add_row(*cells[: len(columns)])
    return table


def short_org(name: str) -> str:
    """ "Allen Institute for AI (Ai2)" -> "Ai2"; other names lose any parenthetical and are cut at 16."""
    if "(" in name and name.endswith(")"):
        inside = name[name.rindex("(") + 1 : -1]
        if len(inside.split()) == 1:
            return inside
        name = name[: name.index("(")].strip()
    name = name.split(",")[0]
    return name if len(name) <= 16 else name[:15] + "…"


def mixture_chart(recipe: Recipe, stage_index: int, registry: Registry, mark: Marker, width: int = 120) -> Table:
    stage = recipe.stages[stage_index]
    shares = stage.mixture.shares()
    tokens = stage.total_tokens()
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, padding=(0, 1))
    table.add_column("source", no_wrap=True)
    table.add_column("share", no_wrap=True)
    table.add_column("", justify="right")
    table.add_column("tokens", justify="right")
    narrow = width < 110
    bar_width = 12 if narrow else BAR_WIDTH
    table.add_column("max epochs", justify="right")
    if not narrow:
        table.add_column("category", style="dim")
    for component in stage.mixture.components:
        share = shares[component.source]
        source = registry.sources.get(component.source) if registry else None
        category = source.category.value if source else "?"
        filled = share * bar_width
        bar = Text(
            "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else ""),
            style=CATEGORY_STYLE.get(category, "white"),
        )
        path = f"stages[{stage.name}].mixture.components[{component.source}]"
        cells: list[Text | str] = [
            component.source,
            bar,
            mark(f"{share:6.1%}", f"{path}.share" if component.share is not None else f"{path}.tokens"),
            fmt_tokens(share * tokens) if tokens else "?",
            mark(f"{component.max_epochs:g}", f"{path}.max_epochs")
            if component.max_epochs is not None
            else Text("-", style="dim"),
            category,
        ]
        table.add_row(*cells[: 5 if narrow else 6])
    return table


def _kv(rows: Sequence[tuple[str, object]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for key, value in rows:
        if value is None or value == "":
            continue
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return table


def show(recipe: Recipe, registry: Registry, width: int = 120) -> Group:
    """`midtrain show`: identity, base, one panel per stage, merges, results, inference, contradictions, notes."""
    from midtrain.summary import stage_facts

    mark = Marker(recipe)
    parts: list[RenderableType] = [_identity_panel(recipe, mark), _base_panel(recipe, registry, mark)]
    for index, fact in enumerate(stage_facts(recipe, registry)):
        parts.append(_stage_panel(recipe, index, fact, registry, mark, width))
    for panel in (
        _merges_panel(recipe),
        _results_panel(recipe),
        _inference_panel(recipe, mark),
        _contradictions_panel(recipe),
    ):
        if panel is not None:
            parts.append(panel)
    if recipe.notes:
        parts.append(Panel(Text(recipe.notes), title="[bold]notes[/bold]", title_align="left", box=box.ROUNDED))
    parts.append(legend())
    return Group(*parts)


def _identity_panel(recipe: Recipe, mark: Marker) -> Panel:
    head = Text()
    head.append(recipe.title, style="bold")
    head.append(f"\n{recipe.id}", style="cyan")
    head.append(f" · {recipe.organization}")
    if recipe.release_date:
        head.append(f" · released {recipe.release_date.isoformat()}")
    identity = _kv(
        [
            (
                "model",
                Text(f"{recipe.architecture_class()} ({recipe.family.value}), ")
                .append_text(mark(human_count(recipe.parameters), "parameters"))
                .append_text(
                    Text(
                        " parameters"
                        + (f", {human_count(recipe.active_parameters)} active" if recipe.active_parameters else "")
                    )
                ),
            ),
            ("architecture", recipe.architecture),
            (
                "paper",
                f"{recipe.source.title} ({recipe.source.year})"
                + (f" · arXiv:{recipe.source.arxiv}" if recipe.source.arxiv else ""),
            ),
            ("url", recipe.source.url),
            ("objectives", ", ".join(o.value for o in recipe.objectives)),
            ("techniques", ", ".join(t.value for t in recipe.techniques)),
        ]
    )
    for ref in recipe.source.references:
        identity.add_row("reference", f"{ref.title}" + (f" <{ref.url}>" if ref.url else ""))
    return Panel(Group(head, identity), box=box.ROUNDED)


def _base_panel(recipe: Recipe, registry: Registry, mark: Marker) -> Panel:
    base = recipe.base
    model_entry = registry.models.get(base.model) if registry else None
    hub = base.revision or ""
    base_rows = [
        (
            "model",
            f"{base.model}"
            + (f" ← {model_entry.hub_id}" if model_entry and model_entry.hub_id else "")
            + (f"@{hub}" if hub else ""),
        ),
        ("checkpoint", base.checkpoint),
        ("tokens seen", mark(fmt_tokens(base.tokens_seen), "base.tokens_seen") if base.tokens_seen else None),
        ("context", _context(base.context_length, "base.context_length", mark)),
        ("RoPE θ", mark(f"{base.rope_theta:,.0f}", "base.rope_theta") if base.rope_theta else None),
        ("peak LR", mark(f"{base.peak_lr:.3g}", "base.peak_lr") if base.peak_lr is not None else None),
        ("LR at end", mark(f"{base.lr_at_end:.4g}", "base.lr_at_end") if base.lr_at_end is not None else None),
        ("inherits optimizer", None if base.inherits_optimizer_state is None else str(base.inherits_optimizer_state)),
        ("schedule before", base.schedule_before),
    ]
    base_rows.append(("optimizer", _optimizer_text(recipe.optimizer, "optimizer", mark)))
    return Panel(_kv(base_rows), title="[bold]base[/bold]", title_align="left", box=box.ROUNDED)


def _optimizer_text(opt: Optimizer, path: str, mark: Marker) -> Text:
    """'adamw β=0.9,0.95● ε=1e-08□ wd=0.1● clip=1●': each number marked on its own, defaults dim with □."""
    out = Text(opt.type) if "type" in opt.model_fields_set else Text(opt.type, style="dim")
    numbers = [
        ("β", "betas", f"{opt.betas[0]:g},{opt.betas[1]:g}"),
        ("ε", "eps", f"{opt.eps:g}"),
        ("wd", "weight_decay", f"{opt.weight_decay:g}"),
        ("clip", "grad_clip", "off" if opt.grad_clip is None else f"{opt.grad_clip:g}"),
    ]
    for label, name, text in numbers:
        out.append(f" {label}=").append_text(mark.field(opt, name, text, f"{path}.{name}"))
    if opt.no_decay:
        out.append(f" no decay on {', '.join(opt.no_decay)}")
    if opt.mup_width_ratio:
        out.append(" µP width ratio ").append_text(mark(f"{opt.mup_width_ratio:g}", f"{path}.mup_width_ratio"))
    return out


def _stage_budget(stage: Stage, fact: dict[str, Any], p: str, mark: Marker) -> Text:
    budget = Text()
    if stage.tokens is not None:
        budget.append_text(mark(fmt_tokens(stage.tokens), f"{p}.tokens"))
        budget.append(" tokens")
    elif fact["tokens"]:
        budget.append(f"{fmt_tokens(fact['tokens'])} tokens (from steps)")
    if stage.steps is not None:
        budget.append(", ").append_text(mark(f"{stage.steps:,}", f"{p}.steps")).append(" steps")
    elif fact["steps"]:
        budget.append(f" ≈ {fact['steps']:,} steps")
    if stage.runs.count > 1:
        budget.append(" × ").append_text(mark(str(stage.runs.count), f"{p}.runs.count")).append(
            f" runs ({stage.runs.vary})"
        )
    return budget


def _stage_batch(stage: Stage, p: str, mark: Marker) -> Text | None:
    if not stage.batch:
        return None
    batch = Text()
    if stage.batch.sequences:
        batch.append_text(mark(f"{stage.batch.sequences:,}", f"{p}.batch.sequences")).append(" sequences")
    if stage.batch.sequences is None and stage.batch.tokens:
        batch.append_text(mark(human_count(stage.batch.tokens), f"{p}.batch.tokens")).append(" tokens/step")
    elif stage.tokens_per_step():
        batch.append(f" = {human_count(stage.tokens_per_step())} tokens/step")
    return batch


def _defaults_note(model: Any) -> Text:
    """' (defaults: min_lr 0□)': fields with a schema default that the file leaves out, dim."""
    unset = [
        (name, getattr(model, name))
        for name, info in type(model).model_fields.items()
        if name not in model.model_fields_set and name != "type" and info.default is not None and not info.is_required()
    ]
    if getattr(model, "decay", None) == "none":  # a held LR never reaches its end value
        unset = [(name, value) for name, value in unset if name not in ("end_lr", "min_lr")]
    if not unset:
        return Text("")
    note = ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}" for name, value in unset)
    return Text(f" (defaults: {note}{DEFAULT_MARK})", style="dim")


def _rope_text(rope: Rope, path: str, previous_theta: float | None, mark: Marker) -> Text:
    """The RoPE line: θ change (from the θ the stage's `init` ended with) and scaling; numbers the file
    leaves to the schema are dim with □; one mark for the line, the weakest of its numbers."""
    parts: list[Text] = []
    if rope.theta is not None:
        if previous_theta is not None and previous_theta != rope.theta:
            parts.append(
                Text(f"θ {previous_theta:,.0f} → {rope.theta:,.0f}").append(
                    f" (ABF ×{rope.theta / previous_theta:g})", style="dim"
                )
            )
        else:
            parts.append(Text(f"θ {rope.theta:,.0f}"))
    s = rope.scaling
    if s is not None:

        def num(name: str, text: str) -> Text:
            return Text(text) if name in s.model_fields_set else Marker.default(text)

        if s.type == "yarn":
            yarn = Text(f"YaRN ×{s.factor:g} from {s.original_max_position_embeddings:,}, β_fast ")
            yarn.append_text(num("beta_fast", f"{s.beta_fast:g}")).append(", β_slow ")
            yarn.append_text(num("beta_slow", f"{s.beta_slow:g}"))
            for name in ("mscale", "mscale_all_dim"):
                value = getattr(s, name)
                if value is not None:
                    yarn.append(f", {name} {value:g}")
            yarn.append(", attention ×").append_text(num("attention_factor", f"{s.effective_attention_factor():.4g}"))
            parts.append(yarn)
        elif s.type == "llama3":
            llama = Text(f"llama3 ×{s.factor:g} from {s.original_max_position_embeddings:,} (low ")
            llama.append_text(num("low_freq_factor", f"{s.low_freq_factor:g}")).append(", high ")
            llama.append_text(num("high_freq_factor", f"{s.high_freq_factor:g}")).append(")")
            parts.append(llama)
        else:
            scaled = Text(f"{'PI' if s.type == 'linear' else 'dynamic NTK'} ×{s.factor:g}")
            if s.original_max_position_embeddings:
                scaled.append(f" from {s.original_max_position_embeddings:,}")
            parts.append(scaled)
    if rope.applies_to:
        parts.append(Text(f"on {rope.applies_to}"))
    if not parts:
        return Text("unchanged", style="dim")
    line = Text(mark.bound(path)).append_text(Text("; ").join(parts))
    status = mark.status(path)
    return line.append(MARKS[status], style=STATUS_STYLE[status])


def _stage_rows(recipe: Recipe, index: int, fact: dict[str, Any], mark: Marker) -> list[tuple[str, Any]]:
    stage = recipe.stages[index]
    p = f"stages[{stage.name}]"
    lr_row = mark(stage.schedule.describe(), f"{p}.schedule").append_text(_defaults_note(stage.schedule))
    if fact["lr_start"] is not None:
        lr_row.append(f"  (start {fact['lr_start']:.3g}, end {fact['lr_end']:.3g})", style="dim")
    return [
        ("budget", _stage_budget(stage, fact, p, mark)),
        ("context", _context(stage.sequence_length, f"{p}.sequence_length", mark)),
        ("batch", _stage_batch(stage, p, mark)),
        ("schedule", lr_row),
        (
            "RoPE",
            _rope_text(stage.rope, f"{p}.rope", theta_at_start(recipe, index), mark)
            if stage.rope
            else Text("unchanged", style="dim"),
        ),
        ("optimizer", _optimizer_text(stage.optimizer, f"{p}.optimizer", mark) if stage.optimizer else None),
        ("z-loss", mark(f"{stage.z_loss:g}", f"{p}.z_loss") if stage.z_loss is not None else None),
        (
            "other losses",
            Text(", ").join(mark(f"{k} {v:g}", f"{p}.aux_losses.{k}") for k, v in stage.aux_losses.items())
            if stage.aux_losses
            else None,
        ),
        ("FIM rate", mark(f"{stage.fim_rate:g}", f"{p}.fim_rate") if stage.fim_rate is not None else None),
        ("advance when", stage.advance_when),
        ("starts from", stage.init),
        (
            "share of mid-training",
            f"{fact['share_start']:.0%} → {fact['share_end']:.0%}" if fact["share_start"] is not None else None,
        ),
    ]


def _stage_panel(
    recipe: Recipe, index: int, fact: dict[str, Any], registry: Registry, mark: Marker, width: int
) -> Panel:
    stage = recipe.stages[index]
    body: list[RenderableType] = []
    if stage.description:
        body.append(Text(stage.description, style="italic"))
    body.append(_kv(_stage_rows(recipe, index, fact, mark)))
    body.append(mixture_chart(recipe, index, registry, mark, width))
    for component in stage.mixture.components:
        if component.length_buckets:
            spread = ", ".join(
                f"{b.share:.0%} at {b.min_tokens:,}-{b.max_tokens:,} tokens" for b in component.length_buckets
            )
            body.append(
                mark(
                    f"{component.source} lengths: {spread}",
                    f"stages[{stage.name}].mixture.components[{component.source}].length_buckets",
                )
            )
    if stage.mixture.note:
        body.append(Text(stage.mixture.note, style="dim"))
    title = f"[bold]stage {index + 1}: {stage.name}[/bold] [dim]({stage.kind.value})[/dim]"
    return Panel(Group(*body), title=title, title_align="left", box=box.ROUNDED)


def _merges_panel(recipe: Recipe) -> Panel | None:
    if not recipe.merges:
        return None
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("merge")
    table.add_column("method")
    table.add_column("inputs")
    table.add_column("description", style="dim")
    for merge in recipe.merges:
        inputs = ", ".join(
            f"{i.stage}"
            + (f"#{i.run}" if i.run is not None else " (all runs)")
            + (f" ×{i.weight:g}" if i.weight else "")
            for i in merge.inputs
        )
        method = (
            merge.method
            + (f", {merge.checkpoints} checkpoints" if merge.checkpoints else "")
            + (f" every {merge.interval_steps} steps" if merge.interval_steps else "")
            + (f", decay {merge.ema_decay}" if merge.ema_decay else "")
        )
        table.add_row(merge.name, method, inputs, merge.description or "")
    return Panel(table, title="[bold]merges[/bold]", title_align="left", box=box.ROUNDED)


def _results_panel(recipe: Recipe) -> Panel | None:
    if not recipe.results:
        return None
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("benchmark", "before", "after", "Δ", "model", "where"):
        table.add_column(column, justify="right" if column in ("before", "after", "Δ") else "left")
    for result in recipe.results:
        delta = result.delta
        if delta is None and result.before is not None and result.after is not None:
            delta = result.after - result.before
        suffix = "%" if result.delta_kind == "relative" else ""
        table.add_row(
            result.benchmark,
            f"{result.before:g}" if result.before is not None else "-",
            f"{result.after:g}" if result.after is not None else "-",
            Text(f"{delta:+.1f}{suffix}", style="green" if delta >= 0 else "red") if delta is not None else "",
            result.model or "",
            result.where,
        )
    return Panel(table, title="[bold]reported results[/bold]", title_align="left", box=box.ROUNDED)


def _inference_panel(recipe: Recipe, mark: Marker) -> Panel | None:
    if recipe.inference is None:
        return None
    inf = recipe.inference
    rows = [
        ("context", _context(inf.context_length, "inference.context_length", mark)),
        ("RoPE", _rope_text(inf.rope, "inference.rope", None, mark) if inf.rope else None),
        ("note", inf.note),
    ]
    return Panel(_kv(rows), title="[bold]at inference only (not trained)[/bold]", title_align="left", box=box.ROUNDED)


def _contradictions_panel(recipe: Recipe) -> Panel | None:
    if not recipe.contradictions:
        return None
    lines = Text()
    for item in recipe.contradictions:
        lines.append("• " + ", ".join(item.about) + "\n", style="bold")
        for source in item.sources:
            lines.append(f"    {source}\n")
        lines.append(f"    → {item.choice}\n", style="green")
    return Panel(lines, title="[bold]contradictions between sources[/bold]", title_align="left", box=box.ROUNDED)


def provenance_table(recipe: Recipe, paths: dict[str, Any]) -> Table:
    """Every number in the file, by its full path (list items by name): value, status, bound, citation or note."""
    mark = Marker(recipe)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    table.add_column("status")
    table.add_column("source / note", overflow="fold")
    for path, value in paths.items():
        entry = mark.entry(path)
        status = entry.status if entry else None
        where = ""
        if entry:
            where = " — ".join(x for x in (entry.cite, entry.note) if x)
            if entry.bound != "exact":
                where = f"({entry.bound}) {where}"
        # Text, not str: Rich would read `[anneal]` in `stages[anneal].tokens` as markup and drop it
        table.add_row(
            Text(path),
            f"{value:g}" if isinstance(value, float) else str(value),
            Text(f"{MARKS[status]} {status or 'untagged'}", style=STATUS_STYLE[status]),
            Text(where),
        )
    return table


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-2:
            return f"{value:.3g}"
        if abs(value) >= 1e5:
            return human_count(value)
        if value <= 1.0:
            return f"{value:.3g}"
        return f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


CONTEXT_FIELDS = ("sequence_length", "base context", "final context")


def _fmt_field(field: str, value: object) -> str:
    """A diff cell; context lengths as '131,072 (128K)' so neither convention hides the count."""
    if field in CONTEXT_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        short = fmt_context(value)
        return f"{value:,.0f}" + (f" ({short})" if short != f"{value:,.0f}" else "")
    return _fmt(value)


def _diff_title(stage: dict[str, Any], result: dict[str, Any]) -> Text:
    if "only_in" in stage:
        side = stage["only_in"]
        return Text.assemble(
            (f"{stage['status']}: ", "bold yellow"),
            (f"stage {stage[side + '_index'] + 1}: {stage[side]}", "red" if side == "a" else "green"),
            (f" ({stage.get('kind')})", "dim"),
        )
    how = "same name" if stage.get("paired_by") == "name" else "same kind"
    return Text.assemble(
        ("stage ", "bold"),
        (f"{stage['a_index'] + 1}: {stage['a']}", "red"),
        " → ",
        (f"{stage['b_index'] + 1}: {stage['b']}", "green"),
        (f" (paired by {how})", "dim"),
    )


def diff_view(result: dict[str, Any]) -> Group:
    """`midtrain diff`: changed overview fields, then one panel per pair of stages (or added/removed stage)."""
    parts: list[RenderableType] = [
        Text.assemble(("diff ", "bold"), (result["a"], "red"), " → ", (result["b"], "green"))
    ]
    if result["overview"]:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
        table.add_column("field", style="dim")
        table.add_column(Text(result["a"]), style="red")
        table.add_column(Text(result["b"]), style="green")
        for row in result["overview"]:
            table.add_row(
                Text(row["field"]), Text(_fmt_field(row["field"], row["a"])), Text(_fmt_field(row["field"], row["b"]))
            )
        parts.append(table)
    for stage in result["stages"]:
        title = _diff_title(stage, result)
        if "only_in" in stage:
            parts.append(
                Panel(
                    Text(
                        f"only in {result[stage['only_in']]}"
                        + f" (no unpaired stage of its name or kind in {result['b' if stage['only_in'] == 'a' else 'a']})",
                        style="yellow",
                    ),
                    title=title,
                    title_align="left",
                    box=box.ROUNDED,
                )
            )
            continue
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
        table.add_column(style="dim")
        table.add_column(style="red")
        table.add_column()
        table.add_column(style="green")
        for change in stage["changes"]:
            field = change["field"]
            table.add_row(Text(field), Text(_fmt_field(field, change["a"])), "→", Text(_fmt_field(field, change["b"])))
        mixture = Table(box=None, show_header=True, header_style="dim", pad_edge=False, padding=(0, 1))
        mixture.add_column(f"mixture by {stage['mixture_by']}")
        mixture.add_column("a", justify="right")
        mixture.add_column("b", justify="right")
        mixture.add_column("Δ", justify="right")
        for row in stage["mixture"]:
            style = "green" if row["delta"] > 0 else "red"
            mixture.add_row(
                Text(row["key"]), f"{row['a']:.1%}", f"{row['b']:.1%}", Text(f"{row['delta']:+.1%}", style=style)
            )
        body: list[Table | Text] = (
            [table] if stage["changes"] else [Text("no changes in budget, context, schedule or RoPE", style="dim")]
        )
        body.append(mixture if stage["mixture"] else Text("same mixture", style="dim"))
        parts.append(Panel(Group(*body), title=title, title_align="left", box=box.ROUNDED))
    return Group(*parts)
