"""`midtrain new`: a recipe skeleton that holds every field of the guide's checklist.

Values the author has not read yet are `unknown` where the schema takes that word (a stage's budget,
batch and schedule) and a `TODO` text elsewhere. `midtrain validate` then lists everything that
remains, all at once; `plan` fills an `unknown` schedule with a flagged default and refuses an
`unknown` budget. Nothing here reads the network: the paper's arXiv id goes into `source`, the rest
comes from reading it (docs/adding-a-recipe.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from midtrain.errors import MidtrainError

ARXIV_ID = re.compile(r"^(\d{2})(\d{2})\.\d{4,5}(v\d+)?$")


@dataclass(frozen=True)
class Skeleton:
    recipe_id: str
    arxiv: str | None
    family: str
    organization: str | None
    schema: str  # the $schema reference, relative to where the file goes


def arxiv_year(arxiv: str) -> int:
    """The year an arXiv id (YYMM.NNNNN) was submitted; refuses anything else with the expected form."""
    match = ARXIV_ID.match(arxiv.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise MidtrainError.single(
            "--from-paper: not an arXiv id",
            expected="an arXiv identifier such as 2501.15383 (YYMM.NNNNN, optionally with v2)",
            found=repr(arxiv),
        )
    return 2000 + int(match.group(1))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _source_block(arxiv: str | None) -> str:
    """The `source` block: filled from an arXiv id, TODO without one."""
    if not arxiv:
        return """source:
  title: "TODO: the report's title"
  url: "TODO: where it is published"
  year: TODO
  references: []"""
    return f"""source:
  title: "TODO: the paper's title"
  arxiv: "{arxiv}"
  url: https://arxiv.org/abs/{arxiv}
  year: {arxiv_year(arxiv)}
  references: []          # official configs, model cards and code: {{title, url, kind: config|code|model-card|...}}"""


def skeleton_text(s: Skeleton) -> str:
    """The YAML text of the skeleton, with a comment on each group of fields."""
    source = _source_block(s.arxiv.strip() if s.arxiv else None)
    organization = _quoted(s.organization) if s.organization else '"TODO: who trained the model"'
    return f"""# yaml-language-server: $schema={s.schema}
# A skeleton written by `midtrain new`. Fill it in from the paper, section by section, then run
#   midtrain validate {s.recipe_id}.yaml      # lists everything that is still TODO or unknown
# docs/adding-a-recipe.md is the guide; every number needs a `provenance` entry (stated, derived or assumed).
schema_version: 2
id: {s.recipe_id}
title: "TODO: model - what its mid-training does, in one line"
organization: {organization}
family: {s.family}              # a transformers family (midtrain schema lists them)
parameters: TODO                # e.g. 7.3B
architecture: "TODO: layers, attention, MoE, vocabulary ..."
{source}
objectives: [general]           # general math code reasoning long-context instruction agentic multilingual knowledge
techniques: []                  # anneal, wsd, model-souping, long-context-extension, yarn, abf, fim, ...

# 1. The starting checkpoint: model, tokens seen, context, RoPE θ, the LR schedule that led there.
base:
  model: {s.recipe_id}-base     # add it to registry/models/<yours>.yaml (family, hub_id, context, rope_theta, tiny)
  checkpoint: "TODO: which checkpoint mid-training starts from"
  context_length: TODO          # tokens per sequence before mid-training
  # tokens_seen: 4T             # pre-training tokens behind the checkpoint
  # rope_theta: 500000
  # peak_lr: 3.0e-4             # peak LR of the pre-training schedule
  # lr_at_end: 3.0e-5           # the LR where pre-training stopped (what `from_base` starts at)
  # inherits_optimizer_state: true
  schedule_before: "TODO: the pre-training schedule, in words"

optimizer:                      # leave out what the paper does not give: schema defaults are not counted
  type: adamw                   # adamw adam muon adafactor ademamix
  # betas: [0.9, 0.95]
  # weight_decay: 0.1

# 2. Every stage: budget (tokens or steps and batch), sequence length, batch, LR schedule, RoPE,
#    mixture (sources with shares or tokens), runs. `unknown` marks what the paper does not say.
stages:
  - name: anneal
    kind: anneal                # anneal cooldown decay capability reasoning long-context continued-pretraining agentic pretraining
    description: "TODO: what the stage does, from the paper"
    init: base                  # base, previous, or an earlier stage or merge
    # optimizer_state: carry    # carry | reset, when the paper or its configs say
    tokens: unknown             # token budget of one run, e.g. 50B; plan refuses until it is known
    sequence_length: TODO       # e.g. 4096
    batch: unknown              # {{sequences: 1024}} or {{tokens: 4M}}; a ramp goes under batch.ramp
    schedule: unknown           # e.g. {{type: from_base, decay: linear}}; plan fills a flagged default meanwhile
    # rope: {{theta: 1000000}}    # ABF; or scaling: {{type: yarn, factor: 4, original_max_position_embeddings: 32768}}
    mixture:
      how_chosen: unknown       # empirical microanneal regression proxy-models heuristic unknown
      components:
        - {{source: {s.recipe_id}-data, share: 1.0}}   # add sources to registry/sources/<yours>.yaml

# 3. Merges (soups of runs, Polyak or EMA averaging) and the model the paper releases.
merges: []
# final: anneal

# 4. Reported before → after scores, with the table they come from.
results: []

# 5. Where every number comes from. Short form: "stated: §4.2", "derived: 1024 × 4096", "assumed: why".
provenance: {{}}
contradictions: []              # when sources disagree: {{about: [paths], sources: [...], choice: ...}}
reported: []                    # numbers a paper prints that contradict each other: {{path, value, cite, why}}
revisions: []                   # errata fixed upstream: {{path, old, new, where, date}}
notes: "TODO: what the schema cannot express, and what you could not verify"
"""
