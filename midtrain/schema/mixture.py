"""Data mixtures: shares or token counts per registry source, checked for consistency."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field, model_validator

from midtrain.schema.base import Count, Strict

SHARE_TOLERANCE = 1e-6


class LengthBucket(Strict):
    """Part of a source's text whose documents fall in a length range (Qwen3 S3: 75% at 16K-32K)."""

    min_tokens: int = Field(ge=0)
    max_tokens: int = Field(gt=0)
    share: float = Field(gt=0, le=1, description="Share of the component's text in this length range.")


class Component(Strict):
    source: str = Field(description="Name of a data source in registry/sources.yaml.")
    share: float | None = Field(
        None, ge=0, le=1, description="Share of the stage's tokens (0-1]; at the stage's start when share_end is given."
    )
    share_end: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share at the end of the stage: the share moves linearly from `share` to this (a within-stage ramp).",
    )
    tokens: Count | None = Field(None, description="Tokens of this source in the stage.")
    max_epochs: float | None = Field(None, gt=0, le=1000, description="Most passes over the source allowed.")
    length_buckets: list[LengthBucket] | None = Field(
        None, description="How the component's text is spread over document lengths."
    )
    note: str | None = None

    @model_validator(mode="after")
    def _buckets(self) -> Component:
        if self.share == 0 and not self.share_end:
            raise ValueError("share 0 needs a share_end above 0 (a source ramped in); otherwise leave it out")
        if self.share_end is not None and self.share is None:
            raise ValueError("share_end needs share (the share at the stage's start)")
        if self.length_buckets:
            total = sum(b.share for b in self.length_buckets)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"length bucket shares must sum to 1, found {total:.6g}")
            for bucket in self.length_buckets:
                if bucket.min_tokens >= bucket.max_tokens:
                    raise ValueError(f"length bucket {bucket.min_tokens}-{bucket.max_tokens} is empty")
        return self


class Mixture(Strict):
    components: list[Component] = Field(min_length=1)
    normalize: bool = Field(False, description="Rescale shares that do not sum to 1 (e.g. rounded table values).")
    on_repeat: Literal["error", "warn"] = Field(
        "error", description="What to do when a source would exceed max_epochs."
    )
    how_chosen: Literal["empirical", "microanneal", "regression", "proxy-models", "heuristic", "unknown"] | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Mixture:
        ends = [c.share_end for c in self.components if c.share_end is not None]
        if ends and len(ends) != len(self.components):
            raise ValueError(
                "a ramped mixture needs share_end on every component (the same value as share for a flat one)"
            )
        if ends and abs(sum(ends) - 1.0) > SHARE_TOLERANCE and not self.normalize:
            raise ValueError(f"share_end values must sum to 1 (within {SHARE_TOLERANCE:g}), found {sum(ends):.6g}")
        counts = Counter(c.source for c in self.components)  # linear; list.count per item was quadratic
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"source listed more than once: {', '.join(duplicates)}")
        shares = self._given_shares()
        tokens = self._given_tokens()
        if shares is None and tokens is None:
            raise ValueError("every component needs a share, or every component needs tokens")
        if shares is not None:
            total = sum(shares.values())
            if abs(total - 1.0) > SHARE_TOLERANCE and not self.normalize:
                raise ValueError(
                    f"shares must sum to 1 (within {SHARE_TOLERANCE:g}), found {total:.6g}; "
                    "fix them or set `normalize: true` if they are rounded values from a paper"
                )
            if tokens is not None:
                token_shares = _normalised(tokens)
                for source, share in shares.items():
                    if abs(token_shares[source] - share / total) > 0.01:
                        raise ValueError(
                            f"{source}: share {share:g} disagrees with its tokens "
                            f"({token_shares[source]:.4f} of the mixture's tokens)"
                        )
        return self

    def _given_shares(self) -> dict[str, float] | None:
        """Each component's share as written, or None unless every component has one."""
        shares = {c.source: c.share for c in self.components if c.share is not None}
        return shares if len(shares) == len(self.components) else None

    def _given_tokens(self) -> dict[str, float] | None:
        """Each component's tokens as written, or None unless every component has them."""
        tokens = {c.source: c.tokens for c in self.components if c.tokens is not None}
        return tokens if len(tokens) == len(self.components) else None

    def shares(self) -> dict[str, float]:
        """Normalised shares by source name, whichever way the recipe wrote them."""
        shares = self._given_shares()
        if shares is not None:
            return _normalised(shares)
        tokens = self._given_tokens()
        if tokens is None:  # unreachable once validated: every component has a share or tokens
            raise ValueError("every component needs a share, or every component needs tokens")
        return _normalised(tokens)

    def is_ramped(self) -> bool:
        return any(c.share_end is not None for c in self.components)

    def end_shares(self) -> dict[str, float]:
        """Normalised shares at the end of the stage (the same as shares() without a ramp)."""
        if not self.is_ramped():
            return self.shares()
        return _normalised({c.source: c.share_end or 0.0 for c in self.components})

    def total_tokens(self) -> float | None:
        tokens = self._given_tokens()
        return None if tokens is None else float(sum(tokens.values()))


def _normalised(amounts: dict[str, float]) -> dict[str, float]:
    total = sum(amounts.values())
    return {source: amount / total for source, amount in amounts.items()}
