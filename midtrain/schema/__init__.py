"""The recipe schema (Pydantic v2). Importing it never imports torch, transformers, datasets or dvc."""

from midtrain.schema.base import SCHEMA_VERSION, Builtin, Capability, Category, Family, Format, StageKind, Technique
from midtrain.schema.mixture import Component, Mixture
from midtrain.schema.provenance import Contradiction, Entry
from midtrain.schema.recipe import Base, Merge, Recipe, Result, Source
from midtrain.schema.registry import BaseModelEntry, DataSource, Registry, ScaleProfile
from midtrain.schema.rope import Rope
from midtrain.schema.schedule import Schedule, lr_after_warmup, lr_curve
from midtrain.schema.stage import Batch, Optimizer, Runs, Stage

__all__ = [
    "SCHEMA_VERSION",
    "Base",
    "BaseModelEntry",
    "Batch",
    "Builtin",
    "Capability",
    "Category",
    "Component",
    "Contradiction",
    "DataSource",
    "Entry",
    "Family",
    "Format",
    "Merge",
    "Mixture",
    "Optimizer",
    "Recipe",
    "Registry",
    "Result",
    "Rope",
    "Runs",
    "ScaleProfile",
    "Schedule",
    "Source",
    "Stage",
    "StageKind",
    "Technique",
    "lr_after_warmup",
    "lr_curve",
]
