"""Rich rendering of recipes: the catalogue table, `show`, `diff`, `compare`, provenance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from midtrain.lineage import branch_point, theta_at_start
from midtrain.units import fmt_context, fmt_tokens, human_count

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import JustifyMethod, RenderableType

    from midtrain.schema.provenance import Entry
    from midtrain.schema.recipe import Recipe, Reported, Revision
    from midtrain.schema.registry import Registry
    from midtrain.schema.rope import Rope
    from midtrain.schema.stage import Fim, Optimizer, Stage

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
UNKNOWN_STYLE = "bold red"  # a value the sources do not give, written `unknown` in the recipe
REPORTED_STYLE = "yellow"  # a number as the paper prints it, beside the one the recipe uses
BRANCH_MARK = "⑂"


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
        from midtrain.schema.provenance import numeric_items, path_aliases

        self.entries = recipe.canonical_provenance()
        data = recipe.model_dump(mode="json", exclude_unset=True, exclude={"provenance", "contradictions"})
        self.written = [path for path, _ in numeric_items(data)]
        aliases = path_aliases(
            recipe.model_dump(mode="json", exclude={"provenance", "contradictions"}, exclude_none=True)
        )
        # numbers as the paper prints them, by the canonical path of the value the recipe uses
        self.reported: list[tuple[str, Reported]] = [(aliases.get(r.path, r.path), r) for r in recipe.reported]
        self.shown: set[int] = set()  # indices into `reported` already printed beside their value
        self.revised: list[tuple[str, Revision]] = [(aliases.get(r.path, r.path), r) for r in recipe.revisions]
        self.revised_shown: set[int] = set()

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

    def __call__(self, text: str, path: str, unit: str = "") -> Text:
        """'1,000● steps (paper prints 1,024, §2.5: why)': the value, its mark, its unit, and any number
        the paper prints differently for it."""
        status = self.status(path)
        out = Text(self.bound(path) + text)
        out.append(MARKS[status], style=STATUS_STYLE[status])
        return out.append(unit).append_text(self.reported_note(path))

    def reported_note(self, path: str) -> Text:
        """' (paper prints 768, §2.5: why)' for each number printed differently at or under `path`, and
        ' (✎ was 4.142e-4 until PR #481)' for each erratum there; each once (errata are also in their panel)."""
        from midtrain.summary import fmt_value, reported_text

        def under(at: str) -> bool:
            return at == path or at.startswith((path + ".", path + "["))

        out = Text()
        for index, (at, item) in enumerate(self.reported):
            if index in self.shown or not under(at):
                continue
            self.shown.add(index)
            out.append(f" ({reported_text(item, at[len(path) :].lstrip('.') or None)})", style=REPORTED_STYLE)
        for index, (at, revision) in enumerate(self.revised):
            if index in self.revised_shown or not under(at):
                continue
            self.revised_shown.add(index)
            field = at[len(path) :].lstrip(".")
            out.append(
                f" (✎ {field + ' ' if field else ''}was {fmt_value(revision.old)} until {revision.where})",
                style=REPORTED_STYLE,
            )
        return out

    def unknown(self, path: str, what: str = "") -> Text:
        """A value written `unknown`: styled, never a number; marked only when an entry covers it."""
        out = Text("unknown", style=UNKNOWN_STYLE)
        entry = self.entry(path)
        if entry is not None:
            out.append(MARKS[entry.status], style=STATUS_STYLE[entry.status])
        if what:
            out.append(f" {what}")
        return out.append_text(self.reported_note(path))

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
    text.append("≈ about  ≥ at least  ≤ at most  ", style="dim")
    text.append("unknown", style=UNKNOWN_STYLE)
    text.append(" not given by the sources  ", style="dim")
    text.append(f"{BRANCH_MARK} side branch (not in totals)", style="dim")
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
    """The catalogue; on narrow terminals the organisation (< 100 columns) and objectives (< 120) are left out.

    `stages` counts the main line, with `+N⑂` for side branches (whose tokens are not in the totals);
    `open` counts the values the sources leave unknown (`?`) and the errata (`✎`)."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("id", "left"),
        ("model", "left"),
        ("org", "left"),
        ("year", "right"),
        ("stages", "right"),
        ("mid-training tokens", "right"),
        ("context", "right"),
        ("open", "left"),
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
            _stages_cell(row),
            _tokens_cell(row["mid_training_tokens"]),
            fmt_context(row["final_context"]),
            _open_cell(row),
            ", ".join(row["objectives"]),
        ]
        if width < 100:
            cells = cells[:2] + cells[3:]
        table.add_row(*cells[: len(columns)])
    return table


def _stages_cell(row: dict[str, Any]) -> Text:
    out = Text(str(row["stages"]))
    if row.get("branches"):
        out.append(f"+{row['branches']}{BRANCH_MARK}", style="yellow")
    return out


def _tokens_cell(tokens: float | None) -> Text:
    """A total, or a styled 'unknown' when a counted stage's budget is unknown."""
    return Text("unknown", style=UNKNOWN_STYLE) if tokens is None else Text(fmt_tokens(tokens))


def _open_cell(row: dict[str, Any]) -> Text:
    """'2? 1✎': values written `unknown`, and errata."""
    out = Text()
    if row.get("unknowns"):
        out.append(f"{row['unknowns']}?", style=UNKNOWN_STYLE)
    if row.get("revisions"):
        out.append(" " if out else "").append(f"{row['revisions']}✎", style=REPORTED_STYLE)
    return out


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
    """One row per source: share bar, share (→ end share when the mixture ramps within the stage),
    tokens of one run, max epochs, category."""
    stage = recipe.stages[stage_index]
    shares = stage.mixture.shares()
    ramped = stage.mixture.is_ramped()
    ends = stage.mixture.end_shares() if ramped else shares
    tokens = stage.total_tokens()
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, padding=(0, 1))
    table.add_column("source", no_wrap=True)
    table.add_column("share", no_wrap=True)
    table.add_column("", justify="right")
    if ramped:
        table.add_column("→ at end", justify="right", no_wrap=True)
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
        ]
        if ramped:
            cells.append(
                Text("→ ", style="dim").append_text(mark(f"{ends[component.source]:6.1%}", f"{path}.share_end"))
            )
        cells += [
            _share_tokens(share, ends[component.source], tokens),
            mark(f"{component.max_epochs:g}", f"{path}.max_epochs")
            if component.max_epochs is not None
            else Text("-", style="dim"),
        ]
        if not narrow:
            cells.append(category)
        table.add_row(*cells)
    return table


def _share_tokens(start: float, end: float, tokens: float | None) -> Text:
    """Tokens of a source in one run: a linear ramp averages its start and end shares."""
    if not tokens:
        return Text("?" if tokens is None else "-", style="dim")
    return Text(fmt_tokens((start + end) / 2 * tokens))


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
    """`midtrain show`: identity, base, one panel per stage (the main line, then side branches), merges,
    results, inference, numbers as printed, errata, contradictions, notes."""
    from midtrain.summary import stage_facts, stage_order

    mark = Marker(recipe)
    parts: list[RenderableType] = [_identity_panel(recipe, mark), _base_panel(recipe, registry, mark)]
    facts = stage_facts(recipe, registry)
    for index in stage_order(recipe):
        parts.append(_stage_panel(recipe, index, facts[index], registry, mark, width))
    for panel in (
        _merges_panel(recipe),
        _results_panel(recipe),
        _inference_panel(recipe, mark),
        _reported_panel(recipe, mark),
        _errata_panel(recipe),
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
            ("attention", _attention_text(recipe, mark)),
            (
                "paper",
                f"{recipe.source.title} ({recipe.source.year})"
                + (f" · arXiv:{recipe.source.arxiv}" if recipe.source.arxiv else ""),
            ),
            ("url", recipe.source.url),
            ("objectives", ", ".join(o.value for o in recipe.objectives)),
            ("techniques", ", ".join(t.value for t in recipe.techniques)),
            ("main line", _main_line(recipe)),
            ("side branches", _branches_line(recipe)),
            ("final model", recipe.final_name() if recipe.final or any(s.branch for s in recipe.stages) else None),
            ("unknown", _unknowns_line(recipe)),
        ]
    )
    for ref in recipe.source.references:
        identity.add_row("reference", f"{ref.title}" + (f" <{ref.url}>" if ref.url else ""))
    return Panel(Group(head, identity), box=box.ROUNDED)


def _attention_text(recipe: Recipe, mark: Marker) -> Text | None:
    """'5 sliding : 1 full per 6 layers, window 1,024●; 62 layers' from the recipe's `attention`."""
    att = recipe.attention
    if att is None:
        return None
    out = mark(att.describe(), "attention")
    if att.layers:
        kinds = att.layer_kinds(att.layers)
        counts = ", ".join(f"{kinds.count(kind)} {kind}" for kind in dict.fromkeys(kinds))
        out.append(f"; {att.layers} layers: {counts}", style="dim")
    if att.note:
        out.append(f" ({att.note})", style="dim")
    return out


def _main_line(recipe: Recipe) -> Text:
    """'pretrain 4T → anneal 50B = 4.05T (mid-training 50B)': the stages the totals count, in order."""
    out = Text()
    for n, stage in enumerate(recipe.main_stages()):
        if n:
            out.append(" → ")
        out.append(stage.name)
        tokens = stage.total_tokens()
        out.append(" ").append_text(
            Text(fmt_tokens(tokens), style="dim") if tokens is not None else Text("unknown", style=UNKNOWN_STYLE)
        )
        if stage.runs.count > 1:
            out.append(f" ×{stage.runs.count}", style="dim")
    total, mid = recipe.total_tokens(), recipe.mid_training_tokens()
    out.append(" = ").append_text(_tokens_cell(total))
    if mid != total:
        out.append(" (mid-training ").append_text(_tokens_cell(mid)).append(")")
    return out


def _branches_line(recipe: Recipe) -> Text | None:
    """'long-ctx 20B, from pretrain at 3T tokens' per side branch, and their tokens (not in the totals)."""
    branches = [i for i, stage in enumerate(recipe.stages) if stage.branch]
    if not branches:
        return None
    out = Text(f"{BRANCH_MARK} ", style="yellow")
    for n, index in enumerate(branches):
        stage = recipe.stages[index]
        point = branch_point(recipe, index)
        if n:
            out.append("; ")
        tokens = stage.total_tokens()
        out.append(stage.name).append(" ").append_text(_tokens_cell(tokens))
        out.append(f", from {recipe.init_of(index)}" + (f" {point}" if point else ""), style="dim")
    out.append(" · not in the totals (").append_text(_tokens_cell(recipe.branch_tokens())).append(" in all)")
    return out


def _unknowns_line(recipe: Recipe) -> Text | None:
    paths = recipe.unknowns()
    if not paths:
        return None
    return Text(f"{len(paths)} ", style=UNKNOWN_STYLE).append(
        f"value{'s' if len(paths) > 1 else ''} the sources do not give: " + ", ".join(paths)
    )


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
    """'adamw β=0.9,0.95● ε=1e-08□ wd=0.1● clip=1●': each number marked on its own, defaults dim with □;
    then µP, Muon, QK-Clip and AdEMAMix settings, likewise."""
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
    if opt.mup is not None:
        out.append("; µP")
        if opt.mup.base_width:
            out.append(" base width ").append_text(mark(f"{opt.mup.base_width:,}", f"{path}.mup.base_width"))
        for name, value in opt.mup.multipliers.items():
            out.append(f" {name} ×").append_text(mark(f"{value:g}", f"{path}.mup.multipliers.{name}"))
    if opt.muon is not None:
        _settings(
            out,
            "Muon",
            opt.muon,
            f"{path}.muon",
            mark,
            [
                ("momentum", "momentum", f"{opt.muon.momentum:g}"),
                ("Nesterov", "nesterov", "yes" if opt.muon.nesterov else "no"),
                ("Newton-Schulz steps", "ns_steps", str(opt.muon.ns_steps)),
                ("update RMS", "rms_match", None if opt.muon.rms_match is None else f"{opt.muon.rms_match:g}"),
            ],
        )
    if opt.qk_clip is not None:
        _settings(
            out,
            "QK-Clip",
            opt.qk_clip,
            f"{path}.qk_clip",
            mark,
            [
                ("τ", "tau", f"{opt.qk_clip.tau:g}"),
                ("α", "alpha", f"{opt.qk_clip.alpha:g}"),
            ],
        )
    if opt.ademamix is not None:
        warmup = opt.ademamix.warmup_steps
        _settings(
            out,
            "AdEMAMix",
            opt.ademamix,
            f"{path}.ademamix",
            mark,
            [
                ("α", "alpha", f"{opt.ademamix.alpha:g}"),
                ("β3", "beta3", f"{opt.ademamix.beta3:g}"),
                ("warmup steps", "warmup_steps", None if warmup is None else f"{warmup:,}"),
            ],
        )
    return out


def _settings(
    out: Text, title: str, model: Any, path: str, mark: Marker, items: list[tuple[str, str, str | None]]
) -> None:
    """'; Muon momentum 0.95● Nesterov yes□ …': one marked value per setting (defaults dim with □)."""
    out.append(f"; {title}")
    for label, name, text in items:
        if text is not None:
            out.append(f" {label} ").append_text(mark.field(model, name, text, f"{path}.{name}"))


def _stage_budget(stage: Stage, fact: dict[str, Any], p: str, mark: Marker) -> Text:
    budget = Text()
    if stage.tokens == "unknown":
        budget.append_text(mark.unknown(f"{p}.tokens", "tokens"))
        if fact["tokens"]:
            budget.append(f" (≈ {fmt_tokens(fact['tokens'])} from steps × batch)", style="dim")
    elif stage.known_tokens is not None:
        budget.append_text(mark(fmt_tokens(stage.known_tokens), f"{p}.tokens", " tokens"))
    elif fact["tokens"]:
        budget.append(f"{fmt_tokens(fact['tokens'])} tokens (from steps)")
    if stage.steps == "unknown":
        budget.append(", ").append_text(mark.unknown(f"{p}.steps", "steps"))
        if fact["steps"]:
            budget.append(f" (≈ {fact['steps']:,} from tokens ÷ batch)", style="dim")
    elif stage.known_steps is not None:
        budget.append(", ").append_text(mark(f"{stage.known_steps:,}", f"{p}.steps", " steps"))
    elif fact["steps"]:
        budget.append(f" ≈ {fact['steps']:,} steps")
    if stage.runs.count > 1:
        budget.append(" × ").append_text(mark(str(stage.runs.count), f"{p}.runs.count")).append(
            f" runs ({stage.runs.vary})"
        )
    if fact["tokens"] is None and "unknown" in (stage.tokens, stage.steps):
        budget.append(f" → plan cannot size it without one (--set stages.{stage.name}.tokens=…)", style="dim")
    return budget


def _stage_batch(stage: Stage, p: str, mark: Marker) -> Text | None:
    if stage.batch is None:
        return None
    if stage.batch == "unknown":
        return mark.unknown(f"{p}.batch")
    batch = Text()
    known = stage.known_batch
    if known is None:
        return None
    if known.sequences:
        batch.append_text(mark(f"{known.sequences:,}", f"{p}.batch.sequences", " sequences"))
    if known.sequences is None and known.tokens:
        batch.append_text(mark(human_count(known.tokens), f"{p}.batch.tokens", " tokens/step"))
    elif stage.tokens_per_step():
        batch.append(f" = {human_count(stage.tokens_per_step())} tokens/step")
    if known.ramp:
        batch.append(" at the start", style="dim")
    return batch


def _batch_ramp(stage: Stage, p: str, mark: Marker) -> Text | None:
    """'→ 2,048 sequences (8.39M tokens/step) after 100B tokens●; → …': each later batch, marked."""
    known = stage.known_batch
    if known is None or not known.ramp:
        return None
    out = Text()
    for index, step in enumerate(known.ramp):
        if index:
            out.append("; ")
        if step.sequences:
            size = f"{step.sequences:,} sequences ({human_count(step.sequences * stage.sequence_length)} tokens/step)"
        else:
            size = f"{human_count(step.tokens or 0)} tokens/step"
        when = f" after {fmt_tokens(step.after_tokens)} tokens" if step.after_tokens is not None else ""
        if step.when:
            when += f" ({step.when})" if when else f" when {step.when}"
        out.append("→ ").append_text(mark(size + when, f"{p}.batch.ramp[{index}]"))
    return out


def _fim_text(fim: Fim, p: str, mark: Marker) -> Text:
    """'rate 0.5● · SPM 0.5● of those · document level□ · <|fim_prefix|> … · on code sources□'."""
    out = Text("rate ").append_text(mark(f"{fim.rate:g}", f"{p}.fim.rate"))
    out.append(" · SPM ").append_text(mark.field(fim, "spm_rate", f"{fim.spm_rate:g}", f"{p}.fim.spm_rate"))
    out.append(" of those (the rest PSM) · ").append_text(mark.field(fim, "level", fim.level, f"{p}.fim.level"))
    out.append(" level · ")
    if fim.tokens is not None:
        out.append(f"{fim.tokens.prefix} {fim.tokens.middle} {fim.tokens.suffix}")
    else:
        out.append_text(Marker.default("<|fim_prefix|> <|fim_middle|> <|fim_suffix|>"))
    out.append(" · on ")
    if fim.applies_to:
        out.append(", ".join(fim.applies_to))
    else:
        out.append_text(Marker.default("code sources"))
    return out


def _schedule_row(recipe: Recipe, stage: Stage, fact: dict[str, Any], p: str, mark: Marker) -> Text:
    """The schedule, marked; an unknown one is styled and says what `plan` fills in."""
    schedule = stage.schedule
    if schedule.type == "unknown":
        from midtrain.summary import unknown_schedule_fill

        row = mark.unknown(f"{p}.schedule")
        if schedule.shape:
            row.append(f" (the paper says {schedule.shape})")
        if schedule.note:
            row.append(f" {schedule.note}", style="dim")
        return row.append(f" → {unknown_schedule_fill(recipe, schedule)}", style="dim")
    row = mark(schedule.describe(), f"{p}.schedule").append_text(_defaults_note(schedule))
    if fact["lr_start"] is not None:
        row.append(f"  (start {fact['lr_start']:.3g}, end {fact['lr_end']:.3g})", style="dim")
    return row


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
        elif s.type == "ntk-alpha":
            base = f"θ {previous_theta:,.0f}" if previous_theta is not None and rope.theta is None else "θ"
            parts.append(Text(f"NTK-aware α {s.alpha:g}").append(f" ({base} × α^(d/(d−2)), head dim d)", style="dim"))
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
    return line.append(MARKS[status], style=STATUS_STYLE[status]).append_text(mark.reported_note(path))


def _starts_from(recipe: Recipe, index: int, mark: Marker) -> Text:
    """'anneal', 'base', 'side branch of pretrain at 3T tokens● (not in totals)'."""
    stage = recipe.stages[index]
    p = f"stages[{stage.name}]"
    init = recipe.init_of(index)
    out = Text(f"side branch of {init}" if stage.branch else init)
    if stage.init_at is not None:  # a branch point inside the init stage
        at = stage.init_at
        text = f"at {fmt_tokens(at.tokens)} tokens" if at.tokens is not None else f"at {at.fraction:.0%}"
        out.append(" ").append_text(mark(text, f"{p}.init_at"))
    if stage.branch:
        out.append(" (not in the totals)", style="yellow")
    elif stage.init == "previous" and index and recipe.stages[index - 1].branch:
        out.append(" (the main line: the side branch above is skipped)", style="dim")
    return out


def _stage_rows(recipe: Recipe, index: int, fact: dict[str, Any], mark: Marker) -> list[tuple[str, Any]]:
    from midtrain.summary import optimizer_state_text, upscale_text

    stage = recipe.stages[index]
    p = f"stages[{stage.name}]"
    if stage.branch:
        share: Text | str | None = Text(f"{BRANCH_MARK} side branch: not in the totals", style="yellow")
    else:
        share = f"{fact['share_start']:.0%} → {fact['share_end']:.0%}" if fact["share_start"] is not None else None
    return [
        ("budget", _stage_budget(stage, fact, p, mark)),
        ("context", _context(stage.sequence_length, f"{p}.sequence_length", mark)),
        ("batch", _stage_batch(stage, p, mark)),
        ("batch ramp", _batch_ramp(stage, p, mark)),
        ("schedule", _schedule_row(recipe, stage, fact, p, mark)),
        (
            "RoPE",
            _rope_text(stage.rope, f"{p}.rope", theta_at_start(recipe, index), mark)
            if stage.rope
            else Text("unchanged", style="dim"),
        ),
        ("optimizer", _optimizer_text(stage.optimizer, f"{p}.optimizer", mark) if stage.optimizer else None),
        (
            "optimizer state",
            mark(optimizer_state_text(recipe, index) or "", f"{p}.optimizer_state") if stage.optimizer_state else None,
        ),
        ("depth up-scaling", mark(upscale_text(stage) or "", f"{p}.upscale") if stage.upscale else None),
        ("z-loss", mark(f"{stage.z_loss:g}", f"{p}.z_loss") if stage.z_loss is not None else None),
        (
            "other losses",
            Text(", ").join(mark(f"{k} {v:g}", f"{p}.aux_losses.{k}") for k, v in stage.aux_losses.items())
            if stage.aux_losses
            else None,
        ),
        ("FIM", _fim_text(stage.fim, p, mark) if stage.fim is not None else None),
        ("advance when", stage.advance_when),
        ("starts from", _starts_from(recipe, index, mark)),
        ("share of mid-training", share),
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
    if stage.mixture.is_ramped():
        body.append(Text("shares move linearly from the start to the end of the stage", style="dim"))
    if stage.mixture.note:
        body.append(Text(stage.mixture.note, style="dim"))
    title = f"[bold]stage {index + 1}: {stage.name}[/bold] [dim]({stage.kind.value})[/dim]"
    if stage.branch:
        title += f" [yellow]{BRANCH_MARK} side branch of {recipe.init_of(index)}[/yellow]"
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
    """Reported before/after scores; a result measured part-way through a stage names its checkpoint."""
    from midtrain.summary import checkpoint_text

    if not recipe.results:
        return None
    with_checkpoints = any(result.at is not None for result in recipe.results)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    columns = ["benchmark", "before", "after", "Δ", "model", *(["checkpoint"] if with_checkpoints else []), "where"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("before", "after", "Δ") else "left")
    for result in recipe.results:
        delta = result.delta
        if delta is None and result.before is not None and result.after is not None:
            delta = result.after - result.before
        suffix = "%" if result.delta_kind == "relative" else ""
        cells: list[Text | str] = [
            result.benchmark,
            f"{result.before:g}" if result.before is not None else "-",
            f"{result.after:g}" if result.after is not None else "-",
            Text(f"{delta:+.1f}{suffix}", style="green" if delta >= 0 else "red") if delta is not None else "",
            result.model or "",
        ]
        if with_checkpoints:
            checkpoint = checkpoint_text(result)
            cells.append(
                Text(f"intermediate: {checkpoint}", style="yellow") if checkpoint else Text("final", style="dim")
            )
        cells.append(result.where)
        table.add_row(*cells)
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


def _reported_panel(recipe: Recipe, mark: Marker) -> Panel | None:
    """Numbers as the paper prints them that no row above showed beside its used value."""
    from midtrain.summary import reported_text

    left = [(at, item) for index, (at, item) in enumerate(mark.reported) if index not in mark.shown]
    if not left:
        return None
    lines = Text()
    for at, item in left:
        lines.append(f"• {at}: ", style="bold").append(reported_text(item) + "\n", style=REPORTED_STYLE)
    return Panel(
        lines,
        title="[bold]as the paper prints it (the recipe uses other values)[/bold]",
        title_align="left",
        box=box.ROUNDED,
    )


def _errata_panel(recipe: Recipe) -> Panel | None:
    """Values corrected upstream after first publication: path, old → new, where, when, why."""
    if not recipe.revisions:
        return None
    from midtrain.summary import fmt_value

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("field", "old", "new", "where", "date", "note"):
        table.add_column(column, justify="right" if column in ("old", "new") else "left")
    for item in recipe.revisions:
        table.add_row(
            Text(item.path),
            Text(fmt_value(item.old), style="red"),
            Text(fmt_value(item.new), style="green"),
            Text(item.where),
            item.date.isoformat() if item.date else "",
            Text(item.note or "", style="dim"),
        )
    return Panel(table, title="[bold]Errata (values corrected upstream)[/bold]", title_align="left", box=box.ROUNDED)


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
    if isinstance(value, bool):
        return "yes" if value else "no"
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
            (f" {BRANCH_MARK} side branch" if stage.get("branch") else "", "yellow"),
        )
    how = "same name" if stage.get("paired_by") == "name" else "same kind"
    return Text.assemble(
        ("stage ", "bold"),
        (f"{stage['a_index'] + 1}: {stage['a']}", "red"),
        " → ",
        (f"{stage['b_index'] + 1}: {stage['b']}", "green"),
        (f" (paired by {how})", "dim"),
        (f" {BRANCH_MARK} side branch" if stage.get("branch") else "", "yellow"),
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
            [table]
            if stage["changes"]
            else [Text("no changes in budget, context, batch, schedule, RoPE or other settings", style="dim")]
        )
        body.append(mixture if stage["mixture"] else Text("same mixture", style="dim"))
        parts.append(Panel(Group(*body), title=title, title_align="left", box=box.ROUNDED))
    return Group(*parts)
