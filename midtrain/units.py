"""Formatting of counts for people. Dependency-free so the fastest CLI paths can use it."""

from __future__ import annotations


def human_count(value: float | None, unit: str = "") -> str:
    """50e9 -> '50B', 4194304 -> '4.19M'."""
    if value is None:
        return "?"
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def fmt_tokens(value: float | None) -> str:
    return human_count(value) if value else "?"
