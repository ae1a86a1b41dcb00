"""`--set KEY=VALUE` overrides on plain recipe data, before validation.

Keys are field paths; list items are addressed by index or by their `name`, `source` or
`benchmark`: `stages.anneal.tokens=20B`, `stages[0].mixture.components[dolmino-math].share=0.3`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from midtrain.errors import MidtrainError


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set stages.anneal.tokens=20B` / `stages[0].mixture.components[dolmino-math].share=0.3` on plain recipe data."""
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key:
            raise MidtrainError.single("an override is KEY=VALUE", found=item, expected="e.g. stages.anneal.tokens=20B")
        value = _parse_scalar(value_text)
        parts = [p for p in re.split(r"\.|\[|\]", key) if p != ""]
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, key)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if part not in node:
                        raise MidtrainError.single(
                            f"override path {key!r}: no field {part!r}", found=", ".join(map(str, node))
                        )
                    node = node[part]
            else:
                raise MidtrainError.single(f"override path {key!r} goes below a value at {part!r}")
    return data


def _list_index(items: list[Any], part: str, key: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise MidtrainError.single(f"override path {key!r}: index {part} out of range", expected=f"< {len(items)}")
        return int(part)
    for index, item in enumerate(items):
        if isinstance(item, dict) and part in (item.get("name"), item.get("source"), item.get("benchmark")):
            return index
    names = [str(i.get("name") or i.get("source")) for i in items if isinstance(i, dict)]
    raise MidtrainError.single(f"override path {key!r}: no item named {part!r}", expected=", ".join(names), found=part)


def _parse_scalar(text: str) -> Any:
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=True).load(text) if text.strip() else ""
    except Exception:
        return text
