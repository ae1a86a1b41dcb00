"""The experiment a user asks for (microanneal/params.yaml) and the arms it expands to.

Two forms:

- mixture form: `--control prose:0.8,code:0.2 --candidate math --candidate code --share 0.3`. The
  control arm anneals on the control mix; each candidate arm on (1 - share) × control + share ×
  candidate.
- recipe form: `--recipe olmo-2-1124-7b --swap dolmino-math=my-math`. The control arm is a short
  version of the recipe's final anneal (its mixture, schedule shape and LR); each swap arm is the same
  with one source's share given to the candidate.

A source is a built-in corpus (prose, code, math, qa, longdoc, and the degraded `math-noisy`) or a
registry source (registry/sources.yaml: local files or a hub dataset), which is read for real.
Inside the recipe form, the recipe's other sources are their built-in stand-ins.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator

from midtrain.errors import MidtrainError
from midtrain.plan.request import EvalChoice, OwnBase
from midtrain.schema.base import Count, Slug, Strict

if TYPE_CHECKING:
    from midtrain.catalog import Catalog

PARAMS = "microanneal/params.yaml"
DEFAULT_RECIPE = "olmo-2-1124-7b"  # OLMo 2 introduced microanneals; its stand-in base is the default
NOISY = "math-noisy"
BUILTIN_SOURCES = ("prose", "code", "math", "qa", "longdoc", NOISY)
DOMAINS = ("prose", "code", "math", "qa")
ANSWER_METRIC = "math-answer"  # loss on the final-answer tokens of held-out math problems
CONTROL = "control"
MIN_STEPS = 20
# The stand-in base pretrains on this mix (midtrain/plan/planner.py:TINY_BASE_MIX): "the base's own data".
STAND_IN_BASE_MIX = {"prose": 0.80, "code": 0.15, "math": 0.05}


class MicroEval(Strict):
    domains: list[str] | None = Field(None, description="Held-out domains; default prose, code, math, qa.")
    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks (local midtrain_* or the harness's).")
    include: list[str] = Field(default_factory=list, description="Directories of local lm-eval task YAML files.")
    limit: int | None = Field(None, gt=0, description="Documents per lm-eval task.")

    @field_validator("tasks")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        EvalChoice(tasks=value or None)  # the same task-name check as `reproduce --eval-tasks`
        return value


class MicroRequest(Strict):
    """microanneal/params.yaml: written by `midtrain microanneal`, read by the pipeline's stages."""

    recipe: Slug = DEFAULT_RECIPE
    swap: dict[str, str] = Field(default_factory=dict, description="Recipe form: recipe source -> candidate.")
    control: dict[str, float] | None = Field(None, description="Source -> share; default: the base's own data.")
    candidates: list[str] = Field(default_factory=list)
    share: float = Field(0.3, description="Each candidate's share of its arm (the rest is the control).")
    tokens: Count = Field(200_000, description="Tokens per arm and seed.")
    seeds: int = Field(2, description="Data orders per arm.")
    lr: float | None = Field(
        None, gt=0, le=1, description="Start LR of the linear decay to 0; default: the base's final LR."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the stand-in base.")
    base: OwnBase | None = None
    eval: MicroEval = Field(default_factory=MicroEval)
    units: list[str] = Field(
        default_factory=list, description="arm-s<seed> for every arm and seed (dvc.yaml's foreach)."
    )
    layout: dict[str, str] = Field(
        default_factory=lambda: {"data": "tiny", "run": DEFAULT_RECIPE},
        description="data/<data> and runs/<run> folder names that dvc.yaml uses (from the base's plan).",
    )


@dataclass
class Arm:
    name: str
    sources: dict[str, float]  # what the report shows: source -> share
    streams: dict[str, float]  # what the trainer reads: stream -> share


@dataclass
class Design:
    request: MicroRequest
    arms: dict[str, Arm]
    registry_sources: list[str] = field(default_factory=list)  # read and packed for real
    noisy: bool = False
    domains: list[str] = field(default_factory=list)

    @property
    def recipe_form(self) -> bool:
        return bool(self.request.swap)

    def units(self) -> list[str]:
        return unit_names(list(self.arms), self.request.seeds)


def unit_names(arms: list[str], seeds: int) -> list[str]:
    return [f"{arm}-s{seed}" for arm in arms for seed in range(seeds)]


def split_unit(unit: str) -> tuple[str, int]:
    arm, _, seed = unit.rpartition("-s")
    return arm, int(seed)


# ---------------------------------------------------------------- parsing options


def parse_mix(text: str, option: str = "--control") -> dict[str, float]:
    """`prose` or `prose:0.8,code:0.2` -> {source: share}; shares must be positive and sum to 1."""
    mix: dict[str, float] = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise MidtrainError.single(f"empty mix (option {option})", expected="SOURCE or SOURCE:SHARE,...", found=text)
    for part in parts:
        name, _, share_text = part.partition(":")
        name = name.strip()
        try:
            share = float(share_text) if share_text else 1.0
        except ValueError:
            raise MidtrainError.single(
                f"share of {name!r} is not a number (option {option})", expected="a number in (0, 1]", found=share_text
            ) from None
        if not math.isfinite(share) or share <= 0 or share > 1:
            raise MidtrainError.single(
                f"share of {name!r} is out of range (option {option})", expected="a number in (0, 1]", found=share_text
            )
        if name in mix:
            raise MidtrainError.single(f"source {name!r} appears twice (option {option})", found=text)
        mix[name] = share
    total = sum(mix.values())
    if len(parts) == 1 and not parts[0].count(":"):
        return mix
    if abs(total - 1) > 1e-6:
        raise MidtrainError.single(
            f"the shares of a mix must sum to 1 (option {option})",
            expected="a sum of 1",
            found=f"{total:g} in {text!r}",
        )
    return mix


def parse_swaps(items: list[str]) -> dict[str, str]:
    swaps: dict[str, str] = {}
    for item in items:
        source, sep, candidate = item.partition("=")
        if not sep or not source.strip() or not candidate.strip():
            raise MidtrainError.single(
                "a swap is RECIPE_SOURCE=CANDIDATE (option --swap)", expected="e.g. dolmino-math=my-math", found=item
            )
        swaps[source.strip()] = candidate.strip()
    return swaps


# ---------------------------------------------------------------- expansion and checks


def _problem(message: str, option: str, expected: str | None = None, found: str | None = None) -> MidtrainError:
    return MidtrainError.single(f"{message} (option {option})", expected=expected, found=found)


def check_source(name: str, catalog: Catalog, option: str) -> None:
    known = [*BUILTIN_SOURCES, *sorted(catalog.registry.sources)]
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise _problem(
        f"unknown source {name!r}{hint}",
        option,
        expected="a built-in corpus (" + ", ".join(BUILTIN_SOURCES) + ") or a source in registry/sources.yaml",
        found=name,
    )


def _stream(name: str) -> str:
    return f"{name}.train"


def _streams(sources: dict[str, float], stand_in: dict[str, str]) -> dict[str, float]:
    """Source shares -> stream shares; `stand_in` maps recipe sources to their built-in stream."""
    out: dict[str, float] = {}
    for name, share in sources.items():
        stream = stand_in.get(name) or _stream(name)
        out[stream] = out.get(stream, 0.0) + share
    return out


def _blend(control: dict[str, float], candidate: str, share: float) -> dict[str, float]:
    mix = {name: value * (1 - share) for name, value in control.items()}
    mix[candidate] = mix.get(candidate, 0.0) + share
    return mix


def _check_numbers(request: MicroRequest) -> None:
    if request.seeds < 1:
        raise _problem("seeds must be at least 1", "--seeds", expected="an integer ≥ 1", found=str(request.seeds))
    if request.seeds > 64:
        raise _problem("at most 64 seeds per arm", "--seeds", expected="an integer in 1..64", found=str(request.seeds))
    if not 0 < request.share < 1:
        raise _problem(
            "a candidate's share must be above 0 and below 1 (the rest is the control)",
            "--share",
            expected="a number in (0, 1)",
            found=f"{request.share:g}",
        )


def _mixture_form(request: MicroRequest, catalog: Catalog) -> dict[str, Arm]:
    if request.base is not None and request.base.model is not None and request.control is None:
        raise _problem(
            "with --base, say what the base's own data is", "--control", expected="e.g. --control my-web:0.8,code:0.2"
        )
    control = request.control or dict(STAND_IN_BASE_MIX)
    for name in control:
        check_source(name, catalog, "--control")
    if not request.candidates:
        raise _problem("give at least one candidate source", "--candidate", expected="e.g. --candidate math")
    arms = {CONTROL: Arm(CONTROL, control, _streams(control, {}))}
    for candidate in request.candidates:
        check_source(candidate, catalog, "--candidate")
        if candidate == CONTROL:
            raise _problem("'control' names the control arm; rename the source", "--candidate", found=candidate)
        if candidate in arms:
            raise _problem(f"candidate {candidate!r} is given twice", "--candidate", found=candidate)
        if set(control) == {candidate}:
            raise _problem(
                f"candidate {candidate!r} is the control itself, so its arm would equal the control arm",
                "--candidate",
                expected="a source other than the control",
                found=candidate,
            )
        sources = _blend(control, candidate, request.share)
        arms[candidate] = Arm(candidate, sources, _streams(sources, {}))
    return arms


def _recipe_form(request: MicroRequest, catalog: Catalog) -> dict[str, Arm]:
    if request.candidates or request.control is not None:
        raise _problem(
            "the recipe form takes --swap only; --candidate and --control belong to the mixture form",
            "--swap",
            expected="--recipe ID --swap SOURCE=CANDIDATE",
        )
    recipe = catalog.get(request.recipe)
    stage = final_anneal(recipe)
    control = dict(stage.mixture.shares())
    registry = catalog.registry
    stand_in = {name: _stream(registry.sources[name].builtin.value) for name in control}
    arms = {CONTROL: Arm(CONTROL, control, _streams(control, stand_in))}
    for source, candidate in request.swap.items():
        if source not in control:
            raise _problem(
                f"{source!r} is not a source of {recipe.id}'s final stage {stage.name!r}",
                "--swap",
                expected=", ".join(sorted(control)),
                found=source,
            )
        check_source(candidate, catalog, "--swap")
        if candidate == source:
            raise _problem(f"swapping {source!r} for itself gives the control arm", "--swap", found=candidate)
        if candidate in arms or candidate == CONTROL:
            raise _problem(f"candidate {candidate!r} is used twice (or is named 'control')", "--swap", found=candidate)
        sources = {candidate if name == source else name: share for name, share in control.items()}
        arms[candidate] = Arm(candidate, sources, _streams(sources, stand_in))
    return arms


def final_anneal(recipe: Any) -> Any:
    """The recipe's last annealing stage (anneal, cooldown or decay), else its last stage."""
    annealing = [s for s in recipe.stages if s.kind.value in ("anneal", "cooldown", "decay")]
    return (annealing or list(recipe.stages))[-1]


def expand(request: MicroRequest, catalog: Catalog) -> Design:
    """The arms of a request, with a clear error for every input that cannot make an experiment."""
    _check_numbers(request)
    arms = _recipe_form(request, catalog) if request.swap else _mixture_form(request, catalog)
    registry = catalog.registry
    for arm in arms.values():
        for stream in arm.streams:
            name = stream.removesuffix(".train")
            if name not in BUILTIN_SOURCES and name not in registry.sources:
                raise _problem(f"no data for {name!r}", "--control/--candidate", found=name)
    named = {s for arm in arms.values() for s in arm.streams}
    registry_sources = sorted(
        s.removesuffix(".train") for s in named if s.removesuffix(".train") not in BUILTIN_SOURCES
    )
    domains = request.eval.domains if request.eval.domains is not None else list(DOMAINS)
    for domain in domains:
        if domain not in (*DOMAINS, "longdoc", ANSWER_METRIC):
            raise _problem(
                f"unknown held-out domain {domain!r}",
                "--eval",
                expected=", ".join([*DOMAINS, "longdoc"]) + " or an lm-eval task",
                found=domain,
            )
    return Design(
        request=request,
        arms=arms,
        registry_sources=registry_sources,
        noisy=_stream(NOISY) in named,
        domains=[d for d in domains if d != ANSWER_METRIC],
    )


# ---------------------------------------------------------------- params.yaml


def read_request(path: Path) -> MicroRequest:
    from midtrain.yamlio import LineMap, load_yaml, problems_from_validation

    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise MidtrainError.single("microanneal params must be a mapping", file=path)
    try:
        return MicroRequest.model_validate(data)
    except ValidationError as exc:
        raise MidtrainError(
            problems_from_validation(
                exc, path, lines if isinstance(lines, LineMap) else LineMap(), data=data, model=MicroRequest
            )
        ) from None


def write_request(path: Path, request: MicroRequest) -> None:
    from midtrain.io import write_text
    from midtrain.yamlio import dump_yaml

    data: dict[str, Any] = request.model_dump(mode="json")
    data["tokens"] = int(data["tokens"])
    if data["base"] is not None:
        data["base"] = {k: v for k, v in data["base"].items() if v is not None}
    header = (
        "# The microanneal experiment (see microanneal/dvc.yaml). Written by `midtrain microanneal`;\n"
        "# `units` lists every arm × seed, one cached DVC stage each.\n"
    )
    write_text(path, header + dump_yaml(data))
