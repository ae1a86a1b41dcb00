"""The dependency ranges in pyproject.toml are ones the code really supports.

- every requirement of pyproject.toml (and of the extras that are installed) is satisfied by the
  installed version, and constraints.txt (the set CI is green with) lies inside those ranges;
- transformers is new enough for what midtrain relies on, checked by behaviour, not only by number:
  a config built the way midtrain builds it (`rope_parameters={"rope_type": "yarn", ...}`) keeps its
  RoPE settings all the way into the rotary embedding (4.x kept the dict as an unused attribute
  and silently trained with the default RoPE), and `from_config(..., dtype=...)` is honoured;
- datasets imports against the installed huggingface_hub, which has the errors midtrain catches.
"""

from __future__ import annotations

import math
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# The oldest transformers with `rope_parameters` and `dtype=`; pyproject's bound may not go below it.
TRANSFORMERS_NEEDED = Version("5.0")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _requirements() -> list[tuple[str, Requirement]]:
    project = _project()
    found = [("dependencies", Requirement(text)) for text in project["dependencies"]]
    for extra, texts in project.get("optional-dependencies", {}).items():
        found += [(f"[{extra}]", Requirement(text)) for text in texts]
    return [(where, req) for where, req in found if req.marker is None or req.marker.evaluate()]


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _lower_bound(requirement: Requirement) -> Version | None:
    bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


def test_pyproject_ranges_are_satisfied_by_the_installed_versions():
    problems, checked = [], 0
    for where, requirement in _requirements():
        installed = _installed(requirement.name)
        if installed is None:
            if where == "dependencies":
                problems.append(f"{requirement} ({where}) is not installed")
            continue  # an extra this environment did not install
        checked += 1
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement} ({where}): installed {installed}")
    assert not problems, "pyproject.toml states ranges the installed versions do not meet:\n" + "\n".join(problems)
    assert checked >= len(_project()["dependencies"])


def test_every_core_dependency_has_a_lower_bound():
    missing = [str(r) for where, r in _requirements() if where == "dependencies" and _lower_bound(r) is None]
    assert not missing, f"requirements without a lower bound: {missing}"


def test_torch_is_a_lower_bound_never_a_pin():
    """A bare or exact torch requirement makes pip pull a multi-GB CUDA build over the CPU one."""
    (torch_req,) = [r for _, r in _requirements() if canonicalize_name(r.name) == "torch"]
    assert torch_req.specifier and all(spec.operator == ">=" for spec in torch_req.specifier), str(torch_req)


def test_transformers_is_at_least_the_version_midtrain_needs():
    import transformers

    (requirement,) = [r for _, r in _requirements() if canonicalize_name(r.name) == "transformers"]
    bound = _lower_bound(requirement)
    assert bound is not None and bound >= TRANSFORMERS_NEEDED, (
        f"pyproject.toml allows {requirement}, but midtrain uses v5's rope_parameters and dtype= (needs >= {TRANSFORMERS_NEEDED})"
    )
    assert Version(transformers.__version__) >= bound, f"installed transformers {transformers.__version__} < {bound}"


def _tiny_llama(**extra):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        **extra,
    )


def test_rope_parameters_built_as_midtrain_builds_them_reach_the_rotary_embedding(tmp_path):
    """midtrain passes `rope_parameters` (midtrain/train/model.py; Rope.to_hf makes the dict). On
    transformers 4.x the config accepted the keyword, kept it as a plain attribute, and the model ran
    the default RoPE (theta 10,000, no scaling): every context-extension stage trained wrongly."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from midtrain.schema.rope import Rope, Yarn

    theta, factor = 500_000.0, 4.0
    params = Rope(theta=theta, scaling=Yarn(factor=factor, original_max_position_embeddings=2048)).to_hf(theta)
    assert params["rope_type"] == "yarn" and params["rope_theta"] == theta
    config = _tiny_llama(rope_parameters=params)
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.rope_parameters["rope_theta"] == theta
    assert config.rope_parameters["factor"] == factor

    rotary = LlamaRotaryEmbedding(config)
    assert rotary.rope_type == "yarn", f"the model runs {rotary.rope_type!r} RoPE, not the configured YaRN"
    assert math.isclose(rotary.attention_scaling, 0.1 * math.log(factor) + 1.0, rel_tol=1e-6)
    head_dim = config.hidden_size // config.num_attention_heads
    # the highest frequencies are left alone by YaRN: they show the base (theta) the model uses
    expected = theta ** (-2.0 / head_dim)
    assert math.isclose(float(rotary.inv_freq[1]), expected, rel_tol=1e-4), (
        f"rotary base is not {theta:,.0f}: inv_freq[1] = {float(rotary.inv_freq[1])}, expected {expected}"
    )
    assert not torch.allclose(rotary.inv_freq, _default_inv_freq(theta, head_dim)), "YaRN scaling was not applied"

    config.save_pretrained(tmp_path)  # what midtrain saves with each model is what loads again
    again = LlamaConfig.from_pretrained(tmp_path)
    assert {k: again.rope_parameters[k] for k in params} == params


def _default_inv_freq(theta: float, head_dim: int):  # type: ignore[no-untyped-def]
    import torch

    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def test_from_config_honours_dtype():
    """midtrain creates and loads models with `dtype=` (v5's name; `torch_dtype` before 4.56)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(_tiny_llama(), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_datasets_imports_with_the_installed_huggingface_hub():
    """transformers 5 needs huggingface_hub 1.x; datasets < 4.2 does not work with it."""
    import datasets
    import huggingface_hub.errors as errors

    assert datasets.load_dataset is not None
    for name in ("EntryNotFoundError", "LocalEntryNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"):
        assert hasattr(errors, name), f"huggingface_hub.errors.{name} (caught in midtrain/plan/bases.py) is missing"


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: not a `name==version` pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_constraints_pin_versions_inside_pyproject_ranges():
    pins = _constraints()
    assert "torch" not in pins, "torch is installed first by the Makefile (CPU build); constraints.txt must not pin it"
    assert "midtrain" not in pins
    outside = [
        f"{r} but constraints.txt pins {pins[canonicalize_name(r.name)]}"
        for _, r in _requirements()
        if canonicalize_name(r.name) in pins
        and not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, "\n".join(outside)
    for _, requirement in _requirements():
        if canonicalize_name(requirement.name) != "torch":
            assert canonicalize_name(requirement.name) in pins, f"constraints.txt does not pin {requirement.name}"
