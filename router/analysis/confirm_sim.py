"""The leaderboard illusion and what a confirmation run does about it, by simulation against a
known truth (`make bench-confirm`).

Scenario: a control with a thumbs-up rate of 0.20 and k − 1 treatments, every one of them
exactly as good (the null: nothing should ship); each arm gets `--units` units in the
exploration, one binary reward each. The winner is the treatment with the best estimate. Three
ways to decide:

- **best of separate tests:** each treatment tested against the control at 0.05 (as if each
  had been its own two-arm experiment, or tried one after another under one name), the best
  significant one shipped: what trying many variants privately and publishing the best does;
- **one experiment, Bonferroni:** the report's own rule, each treatment at 0.05 / (k − 1);
- **with `confirm`:** the winner, whatever its exploration result, re-run against the control
  on `--confirm-units` new units per arm, shipped when that run alone is significant at 0.05.

Shipped means the two-sided 95 % interval (at the level used) of the difference lies above 0,
so a false ship is at most 2.5 % for one honest test. Also measured: the winner's estimated
lift in the exploration minus its true lift (0): the winner's curse, the bias a best-of-k
estimate carries, against the same for the confirmation's estimate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from router.bench import machine, simulation_main

RATE = 0.20
ARMS = (2, 4, 8, 16)  # k: the control and k - 1 treatments


@dataclass(frozen=True, kw_only=True)
class Settings:
    runs: int = 4_000
    units: int = 2_000
    confirm_units: int = 2_000
    seed: int = 0


def _z(successes: np.ndarray, control: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(difference of rates, its z) of each treatment's count against the control's."""
    p, q = successes / n, control / n
    se = np.sqrt((p * (1 - p) + q * (1 - q)) / n)
    difference = p - q
    with np.errstate(divide="ignore", invalid="ignore"):
        return difference, np.where(se > 0, difference / se, 0.0)


def one_k(k: int, settings: Settings, rng: np.random.Generator) -> dict[str, float]:
    runs, n, m = settings.runs, settings.units, settings.confirm_units
    control = rng.binomial(n, RATE, size=runs)
    treated = rng.binomial(n, RATE, size=(runs, k - 1))
    difference, z = _z(treated, control[:, None], n)
    winner = np.argmax(difference, axis=1)
    rows = np.arange(runs)
    separate = (z > norm.ppf(1 - 0.05 / 2)).any(axis=1)
    bonferroni = (z > norm.ppf(1 - 0.05 / (k - 1) / 2)).any(axis=1)
    again, again_z = _z(rng.binomial(m, RATE, size=runs), rng.binomial(m, RATE, size=runs), m)
    confirmed = again_z > norm.ppf(1 - 0.05 / 2)
    curse = difference[rows, winner]
    return {
        "separate": float(separate.mean()),
        "bonferroni": float(bonferroni.mean()),
        "confirmed": float(confirmed.mean()),
        "curse": float(curse.mean()),
        "curse_se": float(curse.std(ddof=1) / np.sqrt(runs)),
        "again": float(again.mean()),
        "again_se": float(again.std(ddof=1) / np.sqrt(runs)),
    }


def run(settings: Settings) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(settings.seed)
    return {k: one_k(k, settings, rng) for k in ARMS}


def markdown(found: dict[int, dict[str, float]], settings: Settings, command: str, s: float) -> str:
    band = 1.96 * np.sqrt(0.025 * 0.975 / settings.runs)
    lines = [
        f"Machine: {machine()}. Command: `{command}` ({s:.1f} s). Every arm's true thumbs-up "
        f"rate is {RATE:.2f} (nothing should ship); {settings.units:,} units per arm in the "
        f"exploration, {settings.confirm_units:,} per arm in the confirmation; "
        f"{settings.runs:,} runs per k.",
        "",
        "| arms k | false ships: best of separate tests | one experiment, Bonferroni | "
        "with confirm | winner's estimated lift (truth 0) | confirmation's estimate |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k, row in found.items():
        lines.append(
            f"| {k} | {row['separate']:.3f} | {row['bonferroni']:.3f} | {row['confirmed']:.3f} | "
            f"{row['curse']:+.4f} ± {2 * row['curse_se']:.4f} | "
            f"{row['again']:+.4f} ± {2 * row['again_se']:.4f} |"
        )
    lines += [
        "",
        f"- A false ship of one honest test is at most 0.025 (a run's share lands in "
        f"[{0.025 - band:.3f}, {0.025 + band:.3f}] 95 % of the time when the truth is 0.025). "
        "Picking the best of separate tests grows with the number tried (the leaderboard "
        "illusion); Bonferroni within one experiment holds it, but only over the variants that "
        "experiment tests at once, not those tried before under other configs.",
        "- The winner's estimated lift is biased up (±: two Monte Carlo standard errors), more "
        "so the more it was chosen among; the confirmation's estimate of the same winner, on "
        "new units, is not, and its false ships stay at the level of one test however many "
        "variants were tried.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(
        "router.analysis.confirm_sim", __doc__.splitlines()[0], Settings, run, markdown, argv
    )


if __name__ == "__main__":
    sys.exit(main())
