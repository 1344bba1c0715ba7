"""Confidence intervals the course reports: a mean (judge scores) and a proportion (bad rows in a review).

Small samples are the rule in a course run, so both intervals are the ones that
stay honest there: Student's t for a mean, Wilson's for a proportion. No SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import pandas as pd


def t_critical(confidence: float, df: int) -> float:
    """Two-sided Student-t critical value: ``P(|T| <= t) = confidence`` with ``df`` degrees of freedom.

    Exact series of Abramowitz & Stegun 26.7.3-4, solved by bisection (no SciPy);
    a Cornish-Fisher expansion above 1,000 degrees of freedom.
    """
    if not 0 < confidence < 1 or df < 1:
        raise ValueError(f"need 0 < confidence < 1 and df >= 1, got {confidence}, {df}")
    if df > 1000:
        z = NormalDist().inv_cdf((1 + confidence) / 2)
        return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)

    def within(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        c2 = math.cos(theta) ** 2
        term, total = 1.0, 1.0
        if df % 2:
            for j in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * j) / (2 * j + 1)
                total += term
            return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
        for j in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return math.sin(theta) * total

    low, high = 0.0, 1.0
    while within(high) < confidence:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if within(mid) < confidence else (low, mid)
    return (low + high) / 2


def mean_ci(values: Sequence[float] | pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the t-interval ``mean +- t * sd / sqrt(n)`` (NaN bounds below two values)."""
    x = pd.Series(values, dtype=float).dropna()
    if x.empty:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = t_critical(confidence, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z=1.96``); ``(0, 1)`` when ``n`` is 0.

    Unlike ``p ± z·sqrt(p(1-p)/n)`` it stays inside [0, 1] and is not zero-width at 0 of 20.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
