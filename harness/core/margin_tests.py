"""One-sided tests of a paired regression against a margin (a shifted null), their intervals,
and the smallest regression a suite can detect.

Two stages are compared on the same items. Per item ``x_i = s * (candidate_i - baseline_i)``,
signed (``s = ±1``) so that a positive ``x`` is a regression; ``theta = E[x_i]`` is the mean
regression and ``m`` the margin a gate rule allows. Two one-sided hypotheses:

- ``alternative="greater"``: H0 ``theta <= m`` vs H1 ``theta > m`` -- the regression is shown to
  *exceed* the margin (the gate's ``significance`` mode fails a rule on this);
- ``alternative="less"``: H0 ``theta >= m`` vs H1 ``theta < m`` -- the regression is shown to be
  *within* the margin (the gate's ``non_inferiority`` mode passes a rule on this).

The null is shifted (``m``, not 0), so a test of "no change" (McNemar, a sign-flip test of
``d_i``) does not answer either question.

**Binary outcomes** (0/1 on both sides): Tango's score test for the difference of paired
proportions (Tango 1998, Stat Med 17:891; the same statistic as Nam 1997). With ``w`` items
that got worse (x = +1), ``g`` that got better (x = -1) out of ``n``,
``Z = (w - g - n m) / sqrt(n (2 q + m (1 - m)))`` where ``q`` is the maximum-likelihood
estimate of the "got better" cell probability *under the null* ``theta = m`` (closed form,
:func:`tango_null_better_rate`). Why this test: the shifted null leaves a nuisance parameter
(how many items flip at all), so the conditional binomial test on the discordant pairs that
McNemar uses no longer applies; the score test handles the nuisance by restricted maximum
likelihood, reduces to McNemar's score test at ``m = 0``, keeps close to nominal size down to
a few dozen items (Tango 1998; Liu et al. 2002, Stat Med 21:231), and inverts to the Tango
score interval, so the test and the interval the gate shows always agree. Exact unconditional
tests (maximising over the nuisance) are much costlier and rarely differ by more than the
test's own discreteness.

**Continuous outcomes**: the one-sample t test of ``x_i`` against ``m``
(:func:`scipy.stats.ttest_1samp` with ``alternative``). Why: the null is about a *mean*; a
sign-flip permutation of ``x_i - m`` is exact only if ``x`` is symmetric about ``m``, which a
shifted null with many unchanged items (``x_i = 0``) is not, so it is no more exact than the
t test, while the t test has the matching interval (``confidence_interval``) and an exact
power function (noncentral t) for the detectable effect. Per-item values are means over
samples, and the CLT applies to their mean over items.

Everything is deterministic; items' order does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALTERNATIVES = ("greater", "less")
POWER = 0.8
_EDGE = 1e-9  # distance from ±1 when searching for an interval bound


@dataclass(frozen=True)
class MarginTest:
    """One one-sided test of the mean regression against ``margin``.

    ``test`` is ``tango`` (binary), ``t`` (continuous) or ``none`` (fewer than two continuous
    items: nothing can be shown, p = 1). ``worse`` / ``better`` count the items whose ``x`` is
    > 0 / < 0; ``spread`` is the discordance rate ``(worse + better) / n`` (binary) or the SD
    of ``x`` (continuous, ddof 1) that the detectable effect is computed from.
    """

    test: str
    n: int
    estimate: float
    margin: float
    alternative: str
    statistic: float
    p_value: float
    worse: int
    better: int
    spread: float


def tango_null_better_rate(worse: int, better: int, n: int, delta: float) -> float:
    """Restricted MLE of P(item got better) when the mean regression is ``delta`` (Tango 1998):
    ``(sqrt(B^2 - 4AC) - B) / 2A`` with ``A = 2n``, ``B = -w - g + (2n - w + g) delta``,
    ``C = -g delta (1 - delta)``."""
    a = 2.0 * n
    b = -worse - better + (2.0 * n - worse + better) * delta
    c = -better * delta * (1.0 - delta)
    return max(0.0, (math.sqrt(max(0.0, b * b - 4.0 * a * c)) - b) / (2.0 * a))


def tango_z(worse: int, better: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: mean regression = ``delta``; large when the observed
    regression ``(worse - better) / n`` is above ``delta``. ±inf when the null variance is 0
    and the data disagree with it, 0 when they agree."""
    num = worse - better - n * delta
    var = n * (2.0 * tango_null_better_rate(worse, better, n, delta) + delta * (1.0 - delta))
    if var <= 0.0:
        return 0.0 if abs(num) < 1e-12 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def _one_sided(z: float, alternative: str) -> float:
    return float(stats.norm.sf(z) if alternative == "greater" else stats.norm.cdf(z))


def _check(alternative: str, margin: float) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative {alternative!r}: expected one of {ALTERNATIVES}")
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")


def margin_test(x: Sequence[float], margin: float, alternative: str, binary: bool) -> MarginTest:
    """Test the mean of the per-item regressions ``x`` against ``margin`` (see the module doc).

    ``binary``: both sides were 0/1 on every item, so ``x`` is in {-1, 0, 1} (Tango's score
    test); otherwise the one-sample t test. With every ``x`` equal (zero SD) the t test is
    undefined: p = 0 when that common value is strictly on H1's side of the margin, else 1.
    """
    _check(alternative, margin)
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError("per-item regressions must be finite")
    n, worse, better = int(arr.size), int(np.sum(arr > 0)), int(np.sum(arr < 0))
    if n == 0:
        raise ValueError("no paired items to test")
    estimate = float(arr.mean())
    if binary:
        if not np.all(np.isin(arr, (-1.0, 0.0, 1.0))):
            raise ValueError("binary outcomes give per-item differences in {-1, 0, 1}")
        z = tango_z(worse, better, n, margin)
        return MarginTest("tango", n, estimate, margin, alternative, z, _one_sided(z, alternative),
                          worse, better, (worse + better) / n)
    if n < 2:
        return MarginTest("none", n, estimate, margin, alternative, math.nan, 1.0, worse, better, math.nan)
    sd = float(arr.std(ddof=1))
    if np.ptp(arr) == 0:
        shown = estimate > margin if alternative == "greater" else estimate < margin
        t_stat = math.copysign(math.inf, estimate - margin) if estimate != margin else 0.0
        return MarginTest("t", n, estimate, margin, alternative, t_stat, 0.0 if shown else 1.0, worse, better, sd)
    res = stats.ttest_1samp(arr, popmean=margin, alternative=alternative)
    return MarginTest("t", n, estimate, margin, alternative, float(res.statistic), float(res.pvalue), worse, better,
                      sd)


def interval(x: Sequence[float], binary: bool, alpha: float) -> tuple[float, float] | None:
    """Two-sided ``1 - 2 alpha`` interval of the mean of ``x``: each end is a one-sided
    ``1 - alpha`` bound, so ``low > m`` exactly when the ``greater`` test rejects at ``alpha``
    and ``high < m`` when the ``less`` test does. Binary: the Tango score interval (the
    ``delta`` where ``tango_z = ±z_{1-alpha}``); continuous: the t interval. None when it
    cannot be computed (fewer than two continuous items)."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    arr = np.asarray(x, dtype=float)
    n = arr.size
    if binary:
        worse, better = int(np.sum(arr > 0)), int(np.sum(arr < 0))
        z = float(stats.norm.isf(alpha))
        return (_tango_root(worse, better, n, z), _tango_root(worse, better, n, -z))
    if n < 2:
        return None
    if np.ptp(arr) == 0:
        return float(arr[0]), float(arr[0])
    ci = stats.ttest_1samp(arr, popmean=0.0).confidence_interval(confidence_level=1 - 2 * alpha)
    return float(ci.low), float(ci.high)


def _tango_root(worse: int, better: int, n: int, z: float) -> float:
    """The ``delta`` in [-1, 1] where ``tango_z(delta) = z`` (the statistic falls as delta rises)."""
    lo, hi = -1.0 + _EDGE, 1.0 - _EDGE

    def f(d: float) -> float:
        return tango_z(worse, better, n, d) - z

    if f(lo) <= 0:
        return -1.0
    if f(hi) >= 0:
        return 1.0
    return float(optimize.brentq(f, lo, hi, xtol=1e-10))


def detectable(result: MarginTest, alpha: float, power: float = POWER) -> float | None:
    """The regression the suite could detect with probability ``power`` at one-sided ``alpha``.

    ``greater``: the smallest true regression that the test would show to exceed the margin
    (a minimum detectable effect, >= margin). ``less``: the largest true regression that it
    would show to be within the margin (may be negative: the candidate must *improve* that
    much). None when no regression in [-1, 1] (binary) reaches that power on ``n`` items.

    Continuous: exact power of the t test from the noncentral t with the observed SD:
    ``theta = m ± nc * sd / sqrt(n)``. Binary: normal approximation to Tango's statistic
    with the observed discordance rate ``psi`` (raised to ``|theta|`` and, under the null,
    to ``m`` where fewer flips could not produce that regression): solve
    ``|theta - m| = z_{1-alpha} sqrt((psi0 - m^2)/n) + z_power sqrt((psi1 - theta^2)/n)``.
    """
    if result.test == "none" or not 0 < alpha < 1 or not 0 < power < 1:
        return None
    n, m, sign = result.n, result.margin, 1.0 if result.alternative == "greater" else -1.0
    if result.test == "t":
        if n < 2:
            return None
        crit = float(stats.t.isf(alpha, n - 1))
        nc = optimize.brentq(lambda c: float(stats.nct.sf(crit, n - 1, c)) - power, 0.0, 10.0 + 2 * crit)
        return m + sign * nc * result.spread / math.sqrt(n)
    za, zb = float(stats.norm.isf(alpha)), float(stats.norm.isf(1 - power))

    def shortfall(theta: float) -> float:  # > 0: theta is detected with more than `power`
        psi1 = max(result.spread, abs(theta))
        psi0 = max(psi1, abs(m))
        need = za * math.sqrt(max(0.0, psi0 - m * m) / n) + zb * math.sqrt(max(0.0, psi1 - theta * theta) / n)
        return sign * (theta - m) - need

    far = 1.0 if sign > 0 else -1.0
    if shortfall(far) <= 0:
        return None
    if shortfall(m) >= 0:
        return m
    return float(optimize.brentq(shortfall, m, far, xtol=1e-10) if sign > 0
                 else optimize.brentq(shortfall, far, m, xtol=1e-10))
