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
    share: float | None = Field(None, gt=0, le=1, description="Share of the stage's tokens (0-1].")
    tokens: Count | None = Field(None, description="Tokens of this source in the stage.")
    max_epochs: float | None = Field(None, gt=0, le=1000, description="Most passes over the source allowed.")
    length_buckets: list[LengthBucket] | None = Field(
        None, description="How the component's text is spread over document lengths."
    )
    note: str | None = None

    @model_validator(mode="after")
    def _buckets(self):  # type: ignore[no-untyped-def]
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
    def _check(self):  # type: ignore[no-untyped-def]
        counts = Counter(c.source for c in self.components)  # linear; list.count per item was quadratic
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"source listed more than once: {', '.join(duplicates)}")
        with_share = [c for c in self.components if c.share is not None]
        with_tokens = [c for c in self.components if c.tokens is not None]
        if len(with_share) != len(self.components) and len(with_tokens) != len(self.components):
            raise ValueError("every component needs a share, or every component needs tokens")
        if len(with_share) == len(self.components):
            total = sum(c.share for c in with_share)  # type: ignore[misc]
            if abs(total - 1.0) > SHARE_TOLERANCE and not self.normalize:
                raise ValueError(
                    f"shares must sum to 1 (within {SHARE_TOLERANCE:g}), found {total:.6g}; "
                    "fix them or set `normalize: true` if they are rounded values from a paper"
                )
            if len(with_tokens) == len(self.components):
                token_shares = self._token_shares()
                for c in self.components:
                    if abs(token_shares[c.source] - c.share / total) > 0.01:  # type: ignore[operator]
                        raise ValueError(
                            f"{c.source}: share {c.share:g} disagrees with its tokens "
                            f"({token_shares[c.source]:.4f} of the mixture's tokens)"
                        )
        return self

    def _token_shares(self) -> dict[str, float]:
        total = sum(c.tokens for c in self.components)  # type: ignore[misc]
        return {c.source: c.tokens / total for c in self.components}  # type: ignore[operator]

    def shares(self) -> dict[str, float]:
        """Normalised shares by source name, whichever way the recipe wrote them."""
        if all(c.share is not None for c in self.components):
            total = sum(c.share for c in self.components)  # type: ignore[misc]
            return {c.source: c.share / total for c in self.components}  # type: ignore[operator]
        return self._token_shares()

    def total_tokens(self) -> float | None:
        if all(c.tokens is not None for c in self.components):
            return float(sum(c.tokens for c in self.components))  # type: ignore[misc]
        return None
