"""The score scale the confluence components share: 0-100 with 50 neutral.

A sub-score maps a signed, scale-free quantity ``x`` onto 0-100 with
``squash(x, scale) = 50 + 50·tanh(x / scale)`` (x = 0 gives exactly 50; ``scale`` is the
x that scores tanh(1) ≈ 0.76 of the way to an extreme: 88.1 or 11.9). Sub-scores are
blended as ``50 + Σ w·(s - 50)`` with the weights renormalised over the available
(not None) ones, so that all-neutral inputs give exactly 50 and a missing sub-score
shares its weight instead of counting as neutral.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

NEUTRAL = 50.0


def squash(x: float | None, scale: float) -> float | None:
    """50 + 50·tanh(x/scale), in [0, 100]; None for a missing or non-finite x."""
    if x is None or not math.isfinite(x):
        return None
    return NEUTRAL + 50.0 * math.tanh(x / scale)


def normalised(scores: Mapping[Any, float | None], weights: Mapping[Any, float]) -> dict:
    """The positive weights of the available (not None) scores, scaled to sum to 1;
    empty when none is available."""
    used = {k: w for k, w in weights.items() if w > 0 and scores.get(k) is not None}
    total = sum(used.values())
    return {k: w / total for k, w in used.items()} if total > 0 else {}


def blend(scores: Mapping[Any, float | None], norm: Mapping[Any, float]) -> float | None:
    """50 + Σ w·(s - 50) over ``norm`` (from ``normalised``), clipped to [0, 100];
    None when ``norm`` is empty (nothing available)."""
    if not norm:
        return None
    # ``norm`` (from ``normalised``) only holds keys whose score is not None.
    value = NEUTRAL + sum(w * (cast(float, scores[k]) - NEUTRAL) for k, w in norm.items())
    return min(100.0, max(0.0, value))


def weighted(scores: Mapping[Any, float | None], weights: Mapping[Any, float]) -> float | None:
    """``blend`` with ``weights`` renormalised over the available scores."""
    return blend(scores, normalised(scores, weights))
