"""Shared building blocks of the schema: the strict base model, token counts and vocabularies."""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from midtrain.errors import short
from midtrain.units import human_count  # noqa: F401  (re-exported)

SCHEMA_VERSION = 2

Unknown = Literal["unknown"]
"""A value the paper does not give, written explicitly: `plan` fills a flagged default or refuses."""
UNKNOWN = "unknown"


class Strict(BaseModel):
    """Every schema model forbids unknown keys so that a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_enum_values=False)


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
# Unambiguous, so a failed match is linear: `[0-9]*\.?[0-9]+` and `\s*([KMBGT]?)\s*` let the regex
# engine try every split of a long run of digits or spaces (16,000 digits took 17 s).
_COUNT = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)((?:[eE][-+]?[0-9]+)?)\s*([KMBGT]?)", re.IGNORECASE)

MAX_TOKENS = 1e15  # a quadrillion tokens: far beyond any published run; anything larger is a typo


def parse_count(value: Any) -> Any:
    """Accept 50e9, 50000000000, "50B", "1.5T", "40M" for counts of tokens or parameters."""
    if isinstance(value, bool):
        raise ValueError("expected a number such as 50e9 or '50B', found a boolean")
    if isinstance(value, str):
        match = _COUNT.fullmatch(value.strip())
        if not match:
            raise ValueError(f"expected a number such as 50e9 or '50B', found {short(value)}")
        return float(match.group(1) + match.group(2)) * _SUFFIX[match.group(3).upper()]
    return value


def _finite_positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive, finite number, found {value!r}")
    if value > MAX_TOKENS:
        raise ValueError(f"{value:.3g} is absurdly large (limit {MAX_TOKENS:.0e})")
    return value


CountText = Annotated[str, Field(pattern=r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*[KMBGTkmbgt]?\s*$")]
Count = Annotated[
    float,
    BeforeValidator(parse_count, json_schema_input_type=Union[Annotated[float, Field(gt=0)], CountText]),  # noqa: UP007 (a runtime value)
    Field(gt=0, le=MAX_TOKENS),
]
"""A positive count (tokens, parameters); written as a number or with a K/M/B/T suffix."""


def parse_count_or_unknown(value: Any) -> Any:
    """Like parse_count, and passes the word 'unknown' through."""
    if value == UNKNOWN:
        return value
    try:
        number = parse_count(value)
    except ValueError:
        number = None
    if not isinstance(number, (int, float)) or isinstance(number, bool) or not 0 < number <= MAX_TOKENS:
        raise ValueError(
            f"expected a positive number such as 50e9 or '50B' (at most 1e15), or 'unknown', found {short(value)}"
        )
    return number


def check_steps_or_unknown(value: Any) -> Any:
    if value == UNKNOWN:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 100_000_000:
        raise ValueError(f"expected a whole number of steps from 1 to 100,000,000, or 'unknown', found {short(value)}")
    return value


_STEPS_INPUT = Union[Annotated[int, Field(gt=0, le=100_000_000)], Unknown]  # noqa: UP007 (a runtime value)
StepsOrUnknown = Annotated[
    Union[int, Unknown],  # noqa: UP007 (a runtime value)
    BeforeValidator(check_steps_or_unknown, json_schema_input_type=_STEPS_INPUT),
]

_COUNT_INPUT = Union[Annotated[float, Field(gt=0)], CountText, Unknown]  # noqa: UP007 (a runtime value)
CountOrUnknown = Annotated[
    Union[Annotated[float, Field(gt=0, le=MAX_TOKENS)], Unknown],  # noqa: UP007 (a runtime value)
    BeforeValidator(parse_count_or_unknown, json_schema_input_type=_COUNT_INPUT),
]
"""A count, or 'unknown' when the paper does not give it."""

Fraction = Annotated[float, Field(ge=0, le=1)]
LearningRate = Annotated[float, Field(ge=0, le=1)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", min_length=1, max_length=80)]


class Capability(str, Enum):
    """Target capabilities: the survey's objective groups."""

    general = "general"
    math = "math"
    code = "code"
    reasoning = "reasoning"
    long_context = "long-context"
    instruction = "instruction"
    agentic = "agentic"
    multilingual = "multilingual"
    knowledge = "knowledge"


class Technique(str, Enum):
    anneal = "anneal"
    lr_to_zero = "lr-to-zero"
    wsd = "wsd"
    constant_lr_tail = "constant-lr-tail"
    model_souping = "model-souping"
    checkpoint_averaging = "checkpoint-averaging"
    model_merging = "model-merging"
    ema = "ema"
    microanneal = "microanneal"
    mixture_regression = "mixture-regression"
    synthetic_data = "synthetic-data"
    rewriting = "rewriting"
    upsampling = "upsampling"
    curriculum = "curriculum"
    decontamination = "decontamination"
    long_context_extension = "long-context-extension"
    progressive_context = "progressive-context"
    abf = "abf"
    yarn = "yarn"
    position_interpolation = "position-interpolation"
    ntk = "ntk"
    llama3_rope = "llama3-rope"
    reasoning_data = "reasoning-data"
    instruction_data = "instruction-data"
    z_loss = "z-loss"
    batch_ramp = "batch-ramp"
    power_schedule = "power-schedule"
    fim = "fim"
    depth_upscaling = "depth-upscaling"
    mup = "mup"
    muon = "muon"
    qk_clip = "qk-clip"
    sliding_window = "sliding-window"
    nope = "nope"
    branching = "branching"


class Category(str, Enum):
    """What a data source is about; drives the built-in stand-in and per-domain evaluation."""

    general = "general"
    web = "web"
    academic = "academic"
    encyclopedic = "encyclopedic"
    math = "math"
    code = "code"
    reasoning = "reasoning"
    qa = "qa"
    instruction = "instruction"
    long_context = "long-context"
    multilingual = "multilingual"


class Format(str, Enum):
    raw = "raw"
    qa = "qa"
    short_cot = "short-cot"
    long_cot = "long-cot"
    instruction = "instruction"
    long_doc = "long-doc"
    code = "code"


class Builtin(str, Enum):
    """The built-in corpora made on the machine for the tiny scale."""

    prose = "prose"
    code = "code"
    math = "math"
    qa = "qa"
    longdoc = "longdoc"


class StageKind(str, Enum):
    """What a stage is. Every kind but `pretraining` is mid-training and counts towards a recipe's
    mid-training tokens; `pretraining` marks a phase of the base's own pre-training run that a recipe
    records for context (a re-warmed stable phase, an LR tail on the unchanged pre-training corpus).
    `continued-pretraining` (a finished checkpoint trained on, with a targeted mix) counts as
    mid-training: it is the survey's capability-targeted continued pre-training branch."""

    anneal = "anneal"
    cooldown = "cooldown"
    decay = "decay"
    capability = "capability"
    reasoning = "reasoning"
    long_context = "long-context"
    continued_pretraining = "continued-pretraining"
    agentic = "agentic"
    pretraining = "pretraining"

    @property
    def is_mid_training(self) -> bool:
        return self is not StageKind.pretraining


class Family(str, Enum):
    """Model families; each maps to a `transformers` architecture and a tiny stand-in config."""

    llama = "llama"
    qwen2 = "qwen2"
    qwen3 = "qwen3"
    qwen3_moe = "qwen3_moe"
    olmo2 = "olmo2"
    olmo3 = "olmo3"
    deepseek_v2 = "deepseek_v2"
    deepseek_v3 = "deepseek_v3"
    minicpm = "minicpm"
    mistral = "mistral"
    phi3 = "phi3"
    granite = "granite"
    smollm3 = "smollm3"
    glm4_moe = "glm4_moe"
    internlm2 = "internlm2"
    hunyuan = "hunyuan"
    nemotron_h = "nemotron_h"
    apertus = "apertus"
    mimo = "mimo"
    longcat = "longcat"
    gemma3 = "gemma3"
    llama4 = "llama4"
    ernie4_5 = "ernie4_5"
    ernie4_5_moe = "ernie4_5_moe"
    falcon_h1 = "falcon_h1"
    instella = "instella"
    zamba2 = "zamba2"


# family -> (the transformers class of the published model, the family used for tiny stand-ins).
# Families whose published code is remote (trust_remote_code) or MoE run tiny as the nearest dense
# architecture that `transformers` ships; the plan prints which one is used.
FAMILY_ARCHITECTURES: dict[Family, tuple[str, str]] = {
    Family.llama: ("LlamaForCausalLM", "llama"),
    Family.qwen2: ("Qwen2ForCausalLM", "qwen2"),
    Family.qwen3: ("Qwen3ForCausalLM", "qwen3"),
    Family.qwen3_moe: ("Qwen3MoeForCausalLM", "qwen3"),
    Family.olmo2: ("Olmo2ForCausalLM", "olmo2"),
    Family.olmo3: ("Olmo3ForCausalLM", "olmo3"),
    Family.deepseek_v2: ("DeepseekV2ForCausalLM", "llama"),
    Family.deepseek_v3: ("DeepseekV3ForCausalLM", "llama"),
    Family.minicpm: ("MiniCPMForCausalLM", "llama"),
    Family.mistral: ("MistralForCausalLM", "llama"),
    Family.phi3: ("Phi3ForCausalLM", "llama"),
    Family.granite: ("GraniteForCausalLM", "llama"),
    Family.smollm3: ("SmolLM3ForCausalLM", "smollm3"),
    Family.glm4_moe: ("Glm4MoeForCausalLM", "llama"),
    Family.internlm2: ("InternLM2ForCausalLM", "llama"),
    Family.hunyuan: ("HunYuanForCausalLM", "llama"),
    Family.nemotron_h: ("NemotronHForCausalLM", "llama"),
    Family.apertus: ("ApertusForCausalLM", "llama"),
    Family.mimo: ("MiMoForCausalLM", "qwen2"),
    Family.longcat: ("LongcatFlashForCausalLM", "llama"),
    Family.gemma3: ("Gemma3ForCausalLM", "llama"),
    Family.llama4: ("Llama4ForCausalLM", "llama"),
    Family.ernie4_5: ("Ernie4_5ForCausalLM", "llama"),
    Family.ernie4_5_moe: ("Ernie4_5_MoeForCausalLM", "llama"),
    Family.falcon_h1: ("FalconH1ForCausalLM", "llama"),
    Family.instella: ("InstellaForCausalLM", "llama"),
    Family.zamba2: ("Zamba2ForCausalLM", "llama"),
}
