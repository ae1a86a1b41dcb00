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


def fmt_context(tokens: int | float | None) -> str:
    """A context length in tokens, short: the unit a paper or config would use for it.

    A multiple of 1,000 is read as decimal (200,000 -> '200K', 128,000 -> '128K', 1,000,000 -> '1M');
    otherwise a multiple of 1,024 is read as binary, the power-of-two convention of configs
    (4,096 -> '4K', 131,072 -> '128K', 1,048,576 -> '1M'); anything else is written out in full
    (100,500 -> '100,500'). Decimal goes first because every multiple of 128,000 is also a multiple
    of 1,024, and 128,000 is meant as '128K', not '125K'.
    """
    if tokens is None:
        return "?"
    n = int(tokens)
    if n != tokens or n < 1000:
        return f"{tokens:,}"
    for unit, suffix in ((1_000_000, "M"), (1000, "K")):
        if n % unit == 0:
            return f"{n // unit:,}{suffix}"
    for unit, suffix in ((1024 * 1024, "M"), (1024, "K")):
        if n % unit == 0:
            return f"{n // unit:,}{suffix}"
    return f"{n:,}"
