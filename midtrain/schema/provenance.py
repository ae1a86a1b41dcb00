"""Provenance: where every number in a recipe comes from.

A recipe's `provenance` maps field paths to a status and a citation. Paths address list items by
their name where they have one, so they read like the YAML: `stages[anneal].tokens`,
`stages[anneal].mixture.components[dclm].share`, `base.lr_at_end`. An entry on a subtree
(`stages[anneal].mixture`) covers every number below it. Entries may be written in full or short:

    base.lr_at_end: {status: stated, cite: "OLMo2-7B-stage2-seed42.yaml"}
    base.lr_at_end: "stated: OLMo2-7B-stage2-seed42.yaml"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from midtrain.schema.base import Strict

Status = Literal["stated", "derived", "assumed"]
STATUSES: tuple[str, ...] = ("stated", "derived", "assumed")
MARKS = {"stated": "●", "derived": "◐", "assumed": "○", None: "·"}


def _short_form(value: Any) -> Any:
    if isinstance(value, str):
        status, sep, rest = value.partition(":")
        status = status.strip()
        if not sep or status not in STATUSES:
            raise ValueError(
                f"expected 'stated: <citation>', 'derived: <arithmetic>' or 'assumed: <why>', found {value!r}"
            )
        rest = rest.strip()
        return {"status": status, "cite": rest} if status == "stated" else {"status": status, "note": rest}
    return value


class Entry(Strict):
    status: Status
    cite: str | None = Field(None, description="Section, table, figure or config file the value comes from.")
    note: str | None = Field(None, description="Arithmetic for derived values; the reason for assumed ones.")
    bound: Literal["exact", "approximate", "lower", "upper"] = Field(
        "exact", description="'approximate' for 'about 5T'; 'lower' for 'over 30T'; 'upper' for 'at most'."
    )

    @model_validator(mode="after")
    def _needs(self) -> Entry:
        if self.status == "stated" and not self.cite:
            raise ValueError("a stated value needs `cite` (section, table or config)")
        if self.status == "derived" and not self.note:
            raise ValueError("a derived value needs `note` showing the arithmetic")
        if self.status == "assumed" and not self.note:
            raise ValueError("an assumed value needs `note` saying why this value")
        return self


ShortEntry = Annotated[str, Field(pattern=r"^(stated|derived|assumed):")]
ProvenanceEntry = Annotated[Entry, BeforeValidator(_short_form, json_schema_input_type=Union[ShortEntry, Entry])]  # noqa: UP007 (a runtime value)


class Contradiction(Strict):
    """Two sources disagree; the recipe records both and which one it follows."""

    about: list[str] = Field(min_length=1, description="Field paths the disagreement concerns.")
    sources: list[str] = Field(min_length=2, description="What each source says, with its citation.")
    choice: str = Field(description="Which value the recipe uses, and why.")


def _item_key(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for key in ("name", "source", "benchmark"):
            value = item.get(key)
            if isinstance(value, str):
                return value
    return str(index)


def path_aliases(data: Any) -> dict[str, str]:
    """Every addressable path -> its canonical (by-name) form. Items may be addressed by index too."""
    out: dict[str, str] = {}

    def walk(node: Any, canonical: str, aliases: list[str]) -> None:
        for alias in aliases:
            out[alias] = canonical
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{canonical}.{key}" if canonical else key, [f"{a}.{key}" if a else key for a in aliases])
        elif isinstance(node, list):
            for index, item in enumerate(node):
                key = _item_key(item, index)
                extra = [f"{a}[{index}]" for a in aliases] if key != str(index) else []
                walk(item, f"{canonical}[{key}]", [f"{a}[{key}]" for a in aliases] + extra)

    walk(data, "", [""])
    out.pop("", None)
    return out


def numeric_items(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(path by name, value) for every number in the data; booleans are not numbers."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from numeric_items(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from numeric_items(item, f"{prefix}[{_item_key(item, index)}]")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield prefix, data


def numeric_leaves(data: Any, prefix: str = "") -> Iterator[str]:
    for path, _ in numeric_items(data, prefix):
        yield path


def covering_entry(path: str, provenance: dict[str, Entry]) -> tuple[str, Entry] | None:
    """The provenance entry for `path` itself or its nearest ancestor."""
    probe = path
    while probe:
        if probe in provenance:
            return probe, provenance[probe]
        cut = max(probe.rfind("."), probe.rfind("["))
        if cut <= 0:
            break
        probe = probe[:cut]
    return None
