"""`auto` run settings: the fastest correct choice for this machine, decided once per run.

A run spec may leave six settings to the machine: `precision`, `compile`, `attn_implementation`,
`optimizer_kernel` (fused / foreach / loop AdamW), `micro_batch` and `activation_checkpointing`.
`resolve` decides them from a `Machine` (device, free memory, what the hardware and the installed
packages support) and the model's `Footprint`, and gives a reason for each. `resolve` is a pure
function: the tests feed it made-up machines (an 80 GB GPU, a 24 GB laptop) and check the choices.

The rules, per setting:

- precision: bf16 autocast where the hardware runs bf16 natively, else fp32 (train/precision.py);
- attention: FlashAttention-2 on a GPU with `flash_attn` installed and bf16, else PyTorch SDPA
  (which picks flash or memory-efficient kernels itself), eager only for models without SDPA;
- AdamW kernel: fused on GPUs (one kernel for every parameter), foreach on CPUs (fused CPU AdamW
  ran at 0.92x of foreach for the tiny stand-in on the 2-core build machine);
- compile: on when the run is long enough to repay compilation (about 30 s on a CPU, a minute or
  more on a GPU): on a GPU from COMPILE_MIN_STEPS steps; on a CPU when the estimated eager compute
  time exceeds CPU_COMPILE_MIN_SECONDS (compiling gained x1.13-1.2 there, so it repays itself only
  over several minutes). Compiled graphs are cached on disk (`compile_cache_dir`), so a second run
  of the same model compiles in seconds;
- micro-batch and activation checkpointing, together: the largest micro-batch that divides every
  per-rank batch of the run and fits in `MEMORY_HEADROOM` of the free memory without
  checkpointing; checkpointing (which recomputes the forward pass, about a third more compute)
  only when not even one sequence fits without it, and then the largest micro-batch that fits
  with it.

The Trainer prints the resolved settings, records them with their reasons in OUT/resolved.json, and
a resumed run reuses that record, so the settings, and therefore the bits, stay those of the
run's start (unless they no longer fit, which it says).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from midtrain.train.config import RunSpec

AUTO = "auto"
MEMORY_HEADROOM = 0.85  # share of the free memory a run may plan to use (allocator slack, fragmentation)
COMPILE_MIN_STEPS = 200  # GPU: compile from this many optimizer steps on
CPU_COMPILE_MIN_SECONDS = 300.0  # CPU: compile above this much estimated eager compute (cold compile ~32 s)
CPU_FLOPS_PER_CORE = 35e9  # fp32 training FLOP/s per core the CPU estimate assumes (2-core build machine: ~70e9)
SETTINGS = (
    "precision",
    "compile",
    "attn_implementation",
    "optimizer_kernel",
    "micro_batch",
    "activation_checkpointing",
)


@dataclass(frozen=True)
class Machine:
    """What `auto` decides from. `free_bytes` is the memory one process may use: a GPU's free
    memory, or the available RAM divided among the processes of this node."""

    device: str  # "cpu" or "cuda"
    free_bytes: int
    bf16: bool
    bf16_reason: str
    flash_attn: bool = False
    compiler: bool = True
    cores: int = 1

    @classmethod
    def probe(cls, device: torch.device, local_processes: int = 1, threads: int = 1) -> Machine:
        import torch

        from midtrain.train.precision import resolve_precision

        precision, reason = resolve_precision(AUTO, device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            major, _minor = torch.cuda.get_device_capability(device)
            flash = major >= 8 and _importable("flash_attn")
            return cls("cuda", int(free), precision == "bf16", reason, flash_attn=flash, compiler=_importable("triton"))
        import psutil

        free = psutil.virtual_memory().available // max(local_processes, 1)
        return cls("cpu", int(free), precision == "bf16", reason, compiler=_has_cxx(), cores=threads)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _has_cxx() -> bool:
    """torch.compile on a CPU generates C++: it needs a compiler."""
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


@dataclass(frozen=True)
class Footprint:
    """The model's size, from its config (nothing is allocated)."""

    parameters: int
    hidden: int
    layers: int
    vocab: int
    heads: int
    intermediate: int
    sdpa: bool = True  # the model class supports torch's scaled_dot_product_attention

    @classmethod
    def of(cls, config: Any, parameters: int, sdpa: bool = True) -> Footprint:
        hidden = int(config.hidden_size)
        return cls(
            parameters=parameters,
            hidden=hidden,
            layers=int(config.num_hidden_layers),
            vocab=int(config.vocab_size),
            heads=int(getattr(config, "num_attention_heads", 1) or 1),
            intermediate=int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden),
            sdpa=sdpa,
        )


@dataclass(frozen=True)
class Choice:
    value: Any
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


def memory_bytes(
    model: Footprint,
    *,
    micro_batch: int,
    sequence_length: int,
    precision: str,
    checkpointing: bool,
    attention: str,
    shards: int = 1,
) -> int:
    """Peak training memory of one process (a deliberate over-estimate):

    - fp32 weights, gradients and two AdamW moments: 16 bytes a parameter, split over `shards`
      processes under FSDP;
    - activations kept for the backward pass, per layer and token, after Korthikanti et al. (2022):
      about 34·hidden bytes in 16-bit (twice that in fp32), with the MLP's width scaled in, plus
      5·heads·sequence bytes for eager attention's score matrices (SDPA and flash keep none);
      with checkpointing only each layer's input is kept, plus one layer recomputed;
    - the logits in fp32, their softmax and its gradient: 3 × 4 bytes per token and vocabulary entry.
    """
    width = 2 if precision == "bf16" else 4
    tokens = micro_batch * sequence_length
    state = model.parameters * 16 // max(shards, 1)
    mlp_scale = (model.intermediate / (4 * model.hidden)) if model.hidden else 1.0
    per_token_layer = model.hidden * (10 + 24 * mlp_scale) * width / 2  # 34·h at a 4h MLP in 16-bit
    if attention == "eager":
        per_token_layer += 5 * model.heads * sequence_length * width / 2
    layer = tokens * per_token_layer
    if checkpointing:
        activations = tokens * model.hidden * width * model.layers + layer
    else:
        activations = layer * model.layers
    logits = tokens * model.vocab * 4 * 3
    return int(state + activations + logits)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]), reverse=True)


def _batch_sizes(spec: RunSpec, world: int) -> list[int]:
    """Per-rank sequences of every optimizer step the run has (global_batch, then each ramp phase)."""
    return [spec.global_batch // world] + [phase.global_batch // world for phase in spec.batch_ramp]


def resolve(spec: RunSpec, machine: Machine, model: Footprint, world: int = 1, shards: int = 1) -> dict[str, Choice]:
    """Every setting of `spec` left to `auto`, decided for `machine`; settings given explicitly are
    returned as they are (reason "as specified")."""
    choices: dict[str, Choice] = {}
    choices["precision"] = _precision(spec, machine)
    precision = choices["precision"].value
    choices["attn_implementation"] = _attention(spec, machine, model, precision)
    choices["optimizer_kernel"] = _kernel(spec, machine)
    choices["compile"] = _compile(spec, machine, model)
    choices.update(_memory(spec, machine, model, precision, choices["attn_implementation"].value, world, shards))
    return choices


def _precision(spec: RunSpec, machine: Machine) -> Choice:
    if spec.precision != AUTO:
        return Choice(spec.precision, "as specified")
    return Choice("bf16" if machine.bf16 else "fp32", machine.bf16_reason)


def _attention(spec: RunSpec, machine: Machine, model: Footprint, precision: str) -> Choice:
    if spec.attn_implementation != AUTO:
        return Choice(spec.attn_implementation, "as specified")
    if machine.device == "cuda" and machine.flash_attn and precision == "bf16":
        return Choice("flash_attention_2", "GPU with flash_attn installed, bf16")
    if model.sdpa:
        reason = "PyTorch SDPA (flash / memory-efficient kernels where the GPU has them)"
        if machine.device == "cuda":
            reason += "; install flash_attn for FlashAttention-2" if not machine.flash_attn else ""
        else:
            reason = "PyTorch SDPA (no score matrix kept for the backward pass)"
        return Choice("sdpa", reason)
    return Choice("eager", "this model class has no SDPA attention")


def _kernel(spec: RunSpec, machine: Machine) -> Choice:
    if spec.optimizer_kernel != AUTO:
        return Choice(spec.optimizer_kernel, "as specified")
    if spec.optimizer.type not in ("adamw", "adam"):
        return Choice("loop", f"{spec.optimizer.type} has its own update (the kernel choice is AdamW's)")
    if machine.device == "cuda":
        return Choice("fused", "GPU: one fused kernel updates every parameter")
    return Choice("foreach", "CPU: foreach ran faster than the fused CPU kernel on the build machine")


def _compile(spec: RunSpec, machine: Machine, model: Footprint) -> Choice:
    if spec.compile != AUTO:
        return Choice(bool(spec.compile), "as specified")
    if not machine.compiler:
        what = "triton" if machine.device == "cuda" else "a C++ compiler (g++ / clang++)"
        return Choice(False, f"torch.compile needs {what}, which this machine lacks")
    if spec.upscale is not None or spec.save_at:
        return Choice(False, "eager: the run changes or snapshots its model mid-run")
    if machine.device == "cuda":
        if spec.steps >= COMPILE_MIN_STEPS:
            return Choice(True, f"GPU run of {spec.steps} steps (>= {COMPILE_MIN_STEPS}) repays compilation")
        return Choice(False, f"GPU run of {spec.steps} steps (< {COMPILE_MIN_STEPS}): compilation would not pay off")
    tokens = sum(b * spec.sequence_length for b in _all_step_batches(spec))
    seconds = 6 * model.parameters * tokens / (CPU_FLOPS_PER_CORE * max(machine.cores, 1))
    if seconds >= CPU_COMPILE_MIN_SECONDS:
        return Choice(True, f"CPU run of about {seconds / 60:.0f} min eager: compiling (~30 s) repays itself")
    return Choice(
        False,
        f"CPU run of about {seconds:.0f} s eager (< {CPU_COMPILE_MIN_SECONDS:.0f} s): compiling would not pay off",
    )


def _all_step_batches(spec: RunSpec) -> list[int]:
    """Sequences (over all ranks) of every optimizer step of the run."""
    sizes = []
    phases = [(0, spec.global_batch)] + [(p.step, p.global_batch) for p in spec.batch_ramp]
    for index, (start, size) in enumerate(phases):
        end = phases[index + 1][0] if index + 1 < len(phases) else spec.steps
        sizes += [size] * max(end - start, 0)
    return sizes


def _memory(
    spec: RunSpec, machine: Machine, model: Footprint, precision: str, attention: str, world: int, shards: int
) -> dict[str, Choice]:
    """micro_batch and activation_checkpointing, decided together (see the module docstring)."""
    per_rank = _batch_sizes(spec, world)
    common = per_rank[0]
    for size in per_rank[1:]:
        common = math.gcd(common, size)
    budget = int(machine.free_bytes * MEMORY_HEADROOM)
    where = "GPU memory" if machine.device == "cuda" else "RAM"

    def need(micro: int, checkpointing: bool) -> int:
        return memory_bytes(
            model,
            micro_batch=micro,
            sequence_length=spec.sequence_length,
            precision=precision,
            checkpointing=checkpointing,
            attention=attention,
            shards=shards,
        )

    def largest(checkpointing: bool) -> int | None:
        return next((m for m in _divisors(max(common, 1)) if need(m, checkpointing) <= budget), None)

    gib = f"{budget / 2**30:.1f} GiB ({MEMORY_HEADROOM:.0%} of the free {where})"
    micro_auto, ckpt_auto = spec.micro_batch == AUTO, spec.activation_checkpointing == AUTO
    if not micro_auto and not ckpt_auto:
        return {
            "micro_batch": Choice(spec.micro_batch, "as specified"),
            "activation_checkpointing": Choice(bool(spec.activation_checkpointing), "as specified"),
        }
    if not micro_auto:
        given = int(spec.micro_batch)
        fits = need(given, False) <= budget
        return {
            "micro_batch": Choice(given, "as specified"),
            "activation_checkpointing": Choice(
                not fits,
                f"micro-batch {given} {'fits' if fits else 'does not fit'} in {gib} without it",
            ),
        }
    if not ckpt_auto:
        checkpointing = bool(spec.activation_checkpointing)
        found = largest(checkpointing)
        return {
            "micro_batch": Choice(found or 1, _micro_reason(found, common, gib)),
            "activation_checkpointing": Choice(checkpointing, "as specified"),
        }
    plain = largest(False)
    if plain is not None:
        return {
            "micro_batch": Choice(plain, _micro_reason(plain, common, gib)),
            "activation_checkpointing": Choice(False, f"not needed: micro-batch {plain} fits in {gib} without it"),
        }
    recomputing = largest(True)
    return {
        "micro_batch": Choice(recomputing or 1, _micro_reason(recomputing, common, gib, checkpointing=True)),
        "activation_checkpointing": Choice(True, f"not even one sequence fits in {gib} without it"),
    }


def _micro_reason(micro: int | None, common: int, gib: str, checkpointing: bool = False) -> str:
    if micro is None:
        return f"not even one sequence fits in {gib}{' with activation checkpointing' if checkpointing else ''}"
    if micro == common:
        return f"the whole per-rank batch ({common} sequences) fits in {gib}"
    return f"the largest divisor of the per-rank batch ({common}) that fits in {gib}"


def compile_cache_dir() -> Path:
    """Where torch.compile keeps compiled graphs between runs (TORCHINDUCTOR_CACHE_DIR when set)."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "midtrain" / "torch-compile"


def describe(choices: dict[str, Choice]) -> str:
    """One line for the terminal: 'fp32 · SDPA attention · foreach AdamW · eager · micro-batch 16 · ...'."""
    value = {name: choices[name].value for name in SETTINGS if name in choices}
    parts = [
        str(value.get("precision")),
        f"{value.get('attn_implementation')} attention",
        f"{value.get('optimizer_kernel')} optimizer",
        "compiled" if value.get("compile") else "eager",
        f"micro-batch {value.get('micro_batch')}",
        "activation checkpointing" if value.get("activation_checkpointing") else "no activation checkpointing",
    ]
    return " · ".join(parts)
