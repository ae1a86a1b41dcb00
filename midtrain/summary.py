"""Plain-data views of recipes shared by `list`, `diff`, `compare`, `lint` and the HTML catalogue.

No Rich, no torch: every function here returns dicts and lists that print as JSON.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from midtrain.lineage import branch_point, starts_from, theta_at_start
from midtrain.schema.provenance import covering_entry, numeric_items, path_aliases
from midtrain.schema.recipe import UNCOUNTED_PREFIXES, Recipe
from midtrain.schema.schedule import lr_after_warmup
from midtrain.units import fmt_tokens, human_count

if TYPE_CHECKING:
    from midtrain.schema.recipe import Reported, Result, Revision
    from midtrain.schema.registry import Registry
    from midtrain.schema.schedule import UnknownSchedule
    from midtrain.schema.stage import Optimizer, Stage

UNKNOWN_TEXT = "unknown"


def list_row(recipe: Recipe) -> dict[str, Any]:
    """One catalogue row. `stages` counts the main line; side branches are `branches`, their tokens
    `branch_tokens` (left out of both totals); `unknowns`, `reported` and `revisions` are counts."""
    branches = [stage for stage in recipe.stages if stage.branch]
    return {
        "id": recipe.id,
        "title": recipe.title,
        "model": recipe.architecture_class().removesuffix("ForCausalLM"),
        "family": recipe.family.value,
        "organization": recipe.organization,
        "year": recipe.source.year,
        "parameters": recipe.parameters,
        "stages": len(recipe.stages) - len(branches),
        "branches": len(branches),
        "mid_training_tokens": recipe.mid_training_tokens(),
        "total_tokens": recipe.total_tokens(),
        "branch_tokens": recipe.branch_tokens() if branches else 0.0,
        "final_context": recipe.final_context(),
        "objectives": [o.value for o in recipe.objectives],
        "techniques": [t.value for t in recipe.techniques],
        "unknowns": len(recipe.unknowns()),
        "reported": len(recipe.reported),
        "revisions": len(recipe.revisions),
    }


# ---------------------------------------------------------------- plain-text views of the v2 fields


def fmt_value(value: object) -> str:
    """A reported or revised value as a paper would print it: 768, 5B, 3e-05, text as is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == int(value) and abs(value) >= 1e5:
        return human_count(value)
    return f"{value:.6g}" if value == int(value) else f"{value:.4g}"


def canonical_path(recipe: Recipe, path: str) -> str:
    """A field path with list items by name (`stages[0].steps` -> `stages[anneal].steps`)."""
    aliases = path_aliases(recipe.model_dump(mode="json", exclude={"provenance", "contradictions"}, exclude_none=True))
    return aliases.get(path, path)


def reported_text(item: Reported, field: str | None = None) -> str:
    """'paper prints 768, §2.5: why' (`field`: name the field when it is not the value shown)."""
    what = f"{field} " if field else ""
    return f"paper prints {what}{fmt_value(item.value)}, {item.cite}: {item.why}"


def revision_text(item: Revision) -> str:
    """'stages[x].tokens: 50B → 60B (PR #12, 2025-01-02; note)'."""
    when = ", ".join(x for x in (item.where, item.date.isoformat() if item.date else None) if x)
    return f"{item.path}: {fmt_value(item.old)} → {fmt_value(item.new)} ({when})" + (
        f"; {item.note}" if item.note else ""
    )


def checkpoint_text(result: Result) -> str | None:
    """Where an intermediate result was measured: 'anneal at 30B tokens', 'anneal at 50%', 'anneal step 1,000'."""
    at = result.at
    if at is None:
        return None
    bits = [at.stage]
    if at.tokens is not None:
        bits.append(f"at {fmt_tokens(at.tokens)} tokens")
    if at.fraction is not None:
        bits.append(f"at {at.fraction:.0%}")
    if at.step is not None:
        bits.append(f"step {at.step:,}")
    return " ".join(bits)


def fim_text(stage: Stage) -> str | None:
    """'rate 50%, SPM 50% of those, document level, tokens <pre> <mid> <suf>, on code sources'."""
    fim = stage.fim
    if fim is None:
        return None
    bits = [f"rate {fim.rate:.0%}", f"SPM {fim.spm_rate:.0%} of those (PSM the rest)", f"{fim.level} level"]
    if fim.tokens is not None:
        bits.append(f"tokens {fim.tokens.prefix} {fim.tokens.middle} {fim.tokens.suffix}")
    bits.append("on " + (", ".join(fim.applies_to) if fim.applies_to else "code sources"))
    return ", ".join(bits)


def batch_ramp_text(stage: Stage) -> str | None:
    """'then 2,048 sequences (8.39M tokens/step) after 100B tokens; 4,096 sequences when the loss plateaus'."""
    batch = stage.known_batch
    if batch is None or not batch.ramp:
        return None
    steps = []
    for step in batch.ramp:
        size = f"{step.sequences:,} sequences" if step.sequences else f"{human_count(step.tokens or 0)} tokens/step"
        if step.sequences:
            size += f" ({human_count(step.sequences * stage.sequence_length)} tokens/step)"
        when = f"after {fmt_tokens(step.after_tokens)} tokens" if step.after_tokens is not None else ""
        if step.when:
            when = f"{when} ({step.when})" if when else f"when {step.when}"
        steps.append(f"{size} {when}")
    return "then " + "; ".join(steps)


def batch_text(stage: Stage) -> str | None:
    """'1,024 sequences = 4.19M tokens/step', 'unknown', or None without a batch; the ramp follows."""
    if stage.batch is None:
        return None
    batch = stage.known_batch
    if batch is None:
        return UNKNOWN_TEXT
    text = f"{batch.sequences:,} sequences" if batch.sequences else f"{human_count(batch.tokens or 0)} tokens/step"
    if batch.sequences and stage.tokens_per_step():
        text += f" = {human_count(stage.tokens_per_step())} tokens/step"
    ramp = batch_ramp_text(stage)
    return text + (f", {ramp}" if ramp else "")


def upscale_text(stage: Stage) -> str | None:
    """'24 → 32 layers: [0, 16) + [8, 24) of the 24' (depth up-scaling)."""
    up = stage.upscale
    if up is None:
        return None
    segments = " + ".join(f"[{a}, {b})" for a, b in up.segments)
    return f"{up.from_layers} → {up.to_layers} layers: {segments} of the {up.from_layers}" + (
        f" ({up.note})" if up.note else ""
    )


def optimizer_state_text(recipe: Recipe, index: int) -> str | None:
    """'carried from anneal' / 'reset (a fresh optimizer)'."""
    state = recipe.stages[index].optimizer_state
    if state is None:
        return None
    if state == "carry":
        return f"carried over from {recipe.init_of(index)}"
    return "reset (starts fresh)"


def optimizer_extras(opt: Optimizer) -> list[str]:
    """The optimizer's µP, Muon, QK-Clip and AdEMAMix settings, one phrase each."""
    out = []
    if opt.mup is not None:
        bits = [f"base width {opt.mup.base_width:,}"] if opt.mup.base_width else []
        bits += [f"{name} ×{value:g}" for name, value in opt.mup.multipliers.items()]
        out.append("µP" + (f" ({', '.join(bits)})" if bits else ""))
    if opt.muon is not None:
        m = opt.muon
        text = f"Muon momentum {m.momentum:g}{' Nesterov' if m.nesterov else ''}, {m.ns_steps} Newton-Schulz steps"
        out.append(text + (f", update RMS {m.rms_match:g}" if m.rms_match else ""))
    if opt.qk_clip is not None:
        out.append(f"QK-Clip τ {opt.qk_clip.tau:g}, α {opt.qk_clip.alpha:g}")
    if opt.ademamix is not None:
        a = opt.ademamix
        out.append(
            f"AdEMAMix α {a.alpha:g}, β3 {a.beta3:g}" + (f", warmup {a.warmup_steps:,} steps" if a.warmup_steps else "")
        )
    return out


def optimizer_text(opt: Optimizer) -> str:
    """'adamw β 0.9,0.95, wd 0.1, clip 1; Muon momentum 0.95 …' in plain text."""
    text = f"{opt.type} β {opt.betas[0]:g},{opt.betas[1]:g}, ε {opt.eps:g}, wd {opt.weight_decay:g}, clip "
    text += "off" if opt.grad_clip is None else f"{opt.grad_clip:g}"
    if opt.mup_width_ratio:
        text += f", µP width ratio {opt.mup_width_ratio:g}"
    extras = optimizer_extras(opt)
    return text + ("; " + "; ".join(extras) if extras else "")


def mixture_ramp_text(stage: Stage) -> str | None:
    """'web 60% → 40%, code 40% → 60%' for a mixture whose shares move within the stage."""
    if not stage.mixture.is_ramped():
        return None
    start, end = stage.mixture.shares(), stage.mixture.end_shares()
    return ", ".join(f"{name} {start[name]:.0%} → {end[name]:.0%}" for name in start)


def unknown_schedule_fill(recipe: Recipe, schedule: UnknownSchedule) -> str:
    """What `plan` puts in place of `schedule: unknown` (midtrain.plan.shapes.planned_schedule)."""
    filled = schedule.filled().describe()  # 'from the base's LR, linear → 0' or 'hold the base's LR'
    lr = recipe.base.lr_at_end
    if lr is None:
        return (
            f"plan fills in a flagged default: {filled}, from a default start LR (the recipe gives no base.lr_at_end)"
        )
    return f"plan fills in a flagged default: {filled} (base LR {lr:.3g})"


def schedule_text(recipe: Recipe, stage: Stage) -> str:
    """The schedule in words; an unknown one says what plan fills in."""
    schedule = stage.schedule
    if schedule.type == "unknown":
        said = f" (the paper says {schedule.shape})" if schedule.shape else ""
        return f"unknown{said}; {unknown_schedule_fill(recipe, schedule)}"
    return schedule.describe()


def stage_extras(recipe: Recipe, index: int) -> list[tuple[str, str]]:
    """(label, text) of a stage's settings beyond budget, context, schedule and RoPE."""
    stage = recipe.stages[index]
    rows = [
        ("batch", batch_text(stage)),
        ("mixture ramp", mixture_ramp_text(stage)),
        ("FIM", fim_text(stage)),
        ("depth up-scaling", upscale_text(stage)),
        ("optimizer state", optimizer_state_text(recipe, index)),
        ("optimizer", optimizer_text(stage.optimizer) if stage.optimizer else None),
        ("advances when", stage.advance_when),
    ]
    return [(label, text) for label, text in rows if text]


def stage_order(recipe: Recipe) -> list[int]:
    """Stage indices in reading order (`show`, the published pages): the main line in order, then the
    side branches, grouped by the main-line stage they branch from (a branch from the base or a merge first)."""
    main = [i for i, stage in enumerate(recipe.stages) if not stage.branch]
    branches = [i for i, stage in enumerate(recipe.stages) if stage.branch]

    def root(index: int, seen: frozenset[int] = frozenset()) -> int:
        """The main-line position a branch hangs from (through branches of branches)."""
        init = recipe.init_of(index)
        parent = next((i for i, s in enumerate(recipe.stages[:index]) if s.name == init), None)
        if parent is None or parent in seen:
            return -1
        return main.index(parent) if parent in main else root(parent, seen | {index})

    return main + sorted(branches, key=lambda i: (root(i), i))


def stage_facts(recipe: Recipe, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Per stage: budget, boundaries as a share of the main line's tokens, LRs, context, RoPE, mixture.

    Side branches are not on the main line: their share is None and they do not move the boundaries.
    An unknown schedule has no LRs here (plan fills a flagged default; see `unknown_schedule_fill`);
    θ changes are read from what each stage starts from (`lineage.theta_at_start`)."""
    total = recipe.total_tokens()
    facts = []
    position = 0.0
    for index, stage in enumerate(recipe.stages):
        tokens = stage.total_tokens()
        steps = stage.total_steps()
        run_tokens = (tokens or 0) * stage.runs.count
        start_share = end_share = None
        if not stage.branch:
            start_share = position / total if total else None
            position += run_tokens
            end_share = position / total if total else None
        lr_start = lr_end = None
        if steps and stage.schedule.type != "unknown":
            try:
                lr_start = lr_after_warmup(stage.schedule, steps, recipe.base.lr_at_end)
                lr_end = stage.schedule.lr_at(steps - 1, steps, recipe.base.lr_at_end)
            except ValueError:
                pass
            if lr_start is not None and (math.isnan(lr_start) or math.isnan(lr_end or 0.0)):
                lr_start = lr_end = None
        start_theta = theta_at_start(recipe, index)
        rope_text = stage.rope.describe(start_theta) if stage.rope else "unchanged"
        theta = stage.rope.theta if stage.rope and stage.rope.theta else start_theta
        shares = stage.mixture.shares()
        categories: dict[str, float] = {}
        if registry is not None:
            for name, share in shares.items():
                source = registry.sources.get(name)
                key = source.category.value if source else "?"
                categories[key] = categories.get(key, 0.0) + share
        facts.append(
            {
                "name": stage.name,
                "kind": stage.kind.value,
                "mid_training": stage.kind.is_mid_training,
                "branch": stage.branch,
                "starts_from": starts_from(recipe, index),
                "branch_point": branch_point(recipe, index),
                "unknowns": ", ".join(stage.unknowns()) or None,
                "tokens": tokens,
                "runs": stage.runs.count,
                "steps": steps,
                "share_start": start_share,
                "share_end": end_share,
                "sequence_length": stage.sequence_length,
                "tokens_per_step": stage.tokens_per_step(),
                "batch": batch_text(stage),
                "schedule": stage.schedule.type,
                "schedule_text": schedule_text(recipe, stage),
                "lr_start": lr_start,
                "lr_end": lr_end,
                "rope": rope_text,
                "rope_theta": theta,
                "mixture": shares,
                "mixture_ramp": mixture_ramp_text(stage),
                "categories": categories,
                "fim": fim_text(stage),
                "upscale": upscale_text(stage),
                "optimizer_state": optimizer_state_text(recipe, index),
                "optimizer": optimizer_text(stage.optimizer) if stage.optimizer else None,
            }
        )
    return facts


def written_numbers(recipe: Recipe) -> dict[str, float]:
    """Numbers the recipe file writes (schema defaults are not claims), by path."""
    data = recipe.model_dump(mode="json", exclude_unset=True, exclude={"provenance", "contradictions"})
    return {p: v for p, v in numeric_items(data) if not p.startswith(UNCOUNTED_PREFIXES)}


def coverage(recipe: Recipe) -> dict[str, Any]:
    """Share of the numbers written in the file that carry provenance, and the share `stated`."""
    entries = recipe.canonical_provenance()
    counted = list(written_numbers(recipe))
    statuses: dict[str, int] = {"stated": 0, "derived": 0, "assumed": 0}
    untagged = []
    for path in counted:
        hit = covering_entry(path, entries)
        if hit is None:
            untagged.append(path)
        else:
            statuses[hit[1].status] += 1
    n = len(counted)
    tagged = n - len(untagged)
    return {
        "numbers": n,
        "tagged": tagged / n if n else 1.0,
        "stated": statuses["stated"] / n if n else 1.0,
        "by_status": statuses,
        "untagged": untagged,
    }


# ---------------------------------------------------------------- diff


def _overview(recipe: Recipe) -> dict[str, Any]:
    return {
        "family": recipe.family.value,
        "parameters": recipe.parameters,
        "base model": recipe.base.model,
        "base tokens seen": recipe.base.tokens_seen,
        "base context": recipe.base.context_length,
        "base LR at end": recipe.base.lr_at_end,
        "stages": len(recipe.main_stages()),
        "mid-training tokens": recipe.mid_training_tokens(),
        "total tokens (main line)": recipe.total_tokens(),
        "side branches": ", ".join(_branch_label(recipe, s) for s in recipe.stages if s.branch) or None,
        "branch tokens": recipe.branch_tokens() or None,
        "final context": recipe.final_context(),
        "final model": recipe.final_name(),
        "attention": recipe.attention.describe() if recipe.attention else None,
        "optimizer": optimizer_text(recipe.optimizer),
        "unknown values": ", ".join(recipe.unknowns()) or None,
        "reported (as printed)": "; ".join(f"{r.path}: {fmt_value(r.value)}" for r in recipe.reported) or None,
        "errata": "; ".join(revision_text(r) for r in recipe.revisions) or None,
        "merges": ", ".join(f"{m.name} ({m.method})" for m in recipe.merges) or None,
        "objectives": ", ".join(o.value for o in recipe.objectives),
        "techniques": ", ".join(t.value for t in recipe.techniques),
    }


def _branch_label(recipe: Recipe, stage: Stage) -> str:
    index = recipe.stages.index(stage)
    point = branch_point(recipe, index)
    return (
        f"{stage.name} ({fmt_tokens(stage.total_tokens())} from {recipe.init_of(index)}{' ' + point if point else ''})"
    )


STAGE_DIFF_FIELDS = (
    "kind",
    "branch",
    "starts_from",
    "unknowns",
    "tokens",
    "runs",
    "steps",
    "share_start",
    "share_end",
    "sequence_length",
    "tokens_per_step",
    "batch",
    "schedule_text",
    "lr_start",
    "lr_end",
    "rope",
    "mixture_ramp",
    "fim",
    "upscale",
    "optimizer_state",
    "optimizer",
)


def _same(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1e-30)
    return x == y


# ---------------------------------------------------------------- compare

COMPARE_FIELDS = {
    "organization": lambda r, reg: r.organization.split(" (")[0],
    "year": lambda r, reg: r.source.year,
    "model": lambda r, reg: f"{r.architecture_class().removesuffix('ForCausalLM')} {human_count(r.parameters)}",
    "base_tokens": lambda r, reg: fmt_tokens(r.base.tokens_seen),
    "mid_training_tokens": lambda r, reg: fmt_tokens(r.mid_training_tokens()),
    "total_tokens": lambda r, reg: fmt_tokens(r.total_tokens()),
    "mid_share": lambda r, reg: _mid_share(r),
    "stages": lambda r, reg: _stages_line(r),
    "branches": lambda r, reg: ", ".join(_branch_label(r, s) for s in r.stages if s.branch) or "-",
    "base_context": lambda r, reg: f"{r.base.context_length:,}",
    "final_context": lambda r, reg: f"{r.final_context():,}",
    "schedules": lambda r, reg: " | ".join(s.schedule.type for s in r.main_stages()),
    "lr_start": lambda r, reg: ", ".join(
        f"{f['lr_start']:.3g}" if f["lr_start"] is not None else ("unknown" if f["schedule"] == "unknown" else "?")
        for f in stage_facts(r)
        if not f["branch"]
    ),
    "rope": lambda r, reg: " | ".join(f["rope"] for f in stage_facts(r) if not f["branch"]),
    "merges": lambda r, reg: ", ".join(f"{m.method}" for m in r.merges) or "-",
    "objectives": lambda r, reg: ", ".join(o.value for o in r.objectives),
    "target_share": lambda r, reg: _target_share(r, reg),
    "unknowns": lambda r, reg: len(r.unknowns()),
    "errata": lambda r, reg: len(r.revisions),
}


def _stage_tokens(stage: Stage) -> str:
    tokens = stage.total_tokens()
    return fmt_tokens(tokens) if tokens is not None else UNKNOWN_TEXT


def _stages_line(recipe: Recipe) -> str:
    """The main line's stages in order (side branches are in the `branches` row)."""
    return " → ".join(
        f"{s.name} ({_stage_tokens(s)}{'' if s.kind.is_mid_training else ', pre-training'})"
        for s in recipe.main_stages()
    )


def _mid_share(recipe: Recipe) -> str:
    """Mid-training tokens as a share of everything trained: the base's tokens plus every stage's."""
    mid, total, base = recipe.mid_training_tokens(), recipe.total_tokens(), recipe.base.tokens_seen
    return f"{mid / (base + total):.1%}" if mid and total and base else "?"


def _target_share(recipe: Recipe, registry: Registry | None) -> str:
    """Share of non-general data in the last main-line stage."""
    if registry is None:
        return "?"
    shares = [f for f in stage_facts(recipe, registry) if not f["branch"]][-1]["categories"]
    general = sum(v for k, v in shares.items() if k in ("general", "web"))
    return f"{1 - general:.0%}"


def lookup(data: Any, dotted: str) -> Any:
    """Follow a dotted path (list items by index or name) through plain data."""
    node = data
    for part in re.split(r"\.|\[|\]", dotted):
        if part == "":
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = next((x for x in node if isinstance(x, dict) and part in (x.get("name"), x.get("source"))), None)
        else:
            return None
    return node


# Older names still accepted by --fields.
COMPARE_ALIASES = {"mid_tokens": "mid_training_tokens"}


def compare_rows(recipes: list[Recipe], fields: list[str], registry: Registry | None) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    dumps = [r.model_dump(mode="json", exclude_none=True) for r in recipes]
    for field in fields:
        known = COMPARE_ALIASES.get(field, field)
        if known in COMPARE_FIELDS:
            rows[field] = [COMPARE_FIELDS[known](r, registry) for r in recipes]
        else:
            values = [lookup(d, field) for d in dumps]
            if all(v is None for v in values):
                from midtrain.errors import MidtrainError

                raise MidtrainError.single(
                    f"unknown field {field!r}",
                    expected=f"one of {', '.join(COMPARE_FIELDS)} or a dotted path such as base.peak_lr",
                    found=field,
                )
            rows[field] = ["-" if v is None else v for v in values]
    return rows
