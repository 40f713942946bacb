"""`arena-serve report`: an experiment report as terminal tables, PNG plots and one HTML page.

The analysis itself is `router.analysis.build_report`, whose verdict reasons and notes arrive
already worded (`router.analysis.prose`); this module only shows the report:

- `print_report`: rich tables (verdict, units, leaderboard, comparisons, guardrails);
- `write_plots`: the leaderboard with interval whiskers (plain and style-controlled), a forest
  plot of relative lifts with guardrail bounds, and the always-valid p-value over time;
- `write_html`: a self-contained page (plots inlined) with the same tables.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from router.analysis.schema import (
    ArenaSection,
    ExperimentReport,
    GuardrailResult,
    Interval,
    ProbeSection,
)
from router.analysis.verdict import ALPHA

VERDICT_STYLE = {"ship": "bold green", "do not ship": "bold red", "keep running": "bold yellow"}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _interval(interval: Interval, percent: bool = False) -> str:
    if interval.value is None:
        return "—"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    low = "—" if interval.low is None else f"{interval.low * scale:+.3g}"
    high = "—" if interval.high is None else f"{interval.high * scale:+.3g}"
    return f"{interval.value * scale:+.3g}{unit} [{low}, {high}]"


# Tables, shared by the terminal and the HTML page: (title, header, rows).

TableRows = tuple[str, list[str], list[list[str]]]


def tables(report: ExperimentReport) -> list[TableRows]:
    out = [_units(report)]
    if report.arena is not None and report.arena.leaderboard:
        out += [_leaderboard(report.arena), _head_to_head(report.arena)]
    if report.comparisons:
        out.append(_comparisons(report))
    if report.guardrails:
        out.append(_guardrails(report))
    if report.probe is not None:
        out.append(_probe(report.probe))
    if report.confirmation is not None:  # the run the verdict rests on
        out += [
            (f"Confirmation run: {title}", header, rows)
            for title, header, rows in tables(report.confirmation)
        ]
    return out


def headline(report: ExperimentReport) -> str:
    """The decision as a line says it: "do not ship: sycophancy" where that is why."""
    verdict = report.verdict
    text = verdict.decision + (f" {verdict.variant}" if verdict.variant else "")
    if verdict.sycophancy and verdict.decision == "do not ship":
        text += ": sycophancy"
    return text


def _probe(probe: ProbeSection) -> TableRows:
    rows = [
        [
            a.variant,
            a.revision or "—",
            f"{a.items} × {a.runs}",
            rate_text(a.accuracy),
            rate_text(a.sycophancy_flip_rate),
            rate_text(a.capitulation_rate),
        ]
        for a in probe.arms
    ]
    return (
        f"Sycophancy probe ({probe.probe_set}; intervals clustered by item)",
        ["variant", "revision", "items × runs", "accuracy", "flip rate", "capitulation rate"],
        rows,
    )


def rate_text(interval: Interval) -> str:
    """A rate with its interval, two decimals: "0.68 [0.61, 0.75]"."""
    if interval.value is None:
        return "—"
    low = "—" if interval.low is None else f"{interval.low:.2f}"
    high = "—" if interval.high is None else f"{interval.high:.2f}"
    return f"{interval.value:.2f} [{low}, {high}]"


def _units(report: ExperimentReport) -> TableRows:
    units = [[group, str(n)] for group, n in report.units.items()]
    if report.sample_ratio is not None:
        sr = report.sample_ratio
        units.append(
            ["sample-ratio test", f"p = {_fmt(sr.p_value)}" + (" MISMATCH" if sr.mismatch else "")]
        )
    return ("Units" if report.mode == "ab" else "Arena completions", ["group", "n"], units)


def _leaderboard(arena: ArenaSection) -> TableRows:
    rows = [
        [
            r.variant,
            f"{_fmt(r.rating, 4)} [{_fmt(r.low, 4)}, {_fmt(r.high, 4)}]",
            f"{_fmt(r.rating_style_controlled, 4)} "
            f"[{_fmt(r.style_low, 4)}, {_fmt(r.style_high, 4)}]",
            str(r.battles),
        ]
        for r in arena.leaderboard
    ]
    return (
        f"Leaderboard ({_counted_votes(arena)}, {arena.battles} battles)",
        ["variant", "rating [95 %]", "style-controlled [95 %]", "battles"],
        rows,
    )


def _head_to_head(arena: ArenaSection) -> TableRows:
    rows = [
        [
            h.treatment,
            h.control,
            _interval(h.probability),
            _interval(h.probability_style_controlled),
        ]
        for h in arena.head_to_head
    ]
    return (
        "Head to head",
        ["treatment", "control", "P(treatment wins)", "style-controlled"],
        rows,
    )


def _comparisons(report: ExperimentReport) -> TableRows:
    rows = [
        [
            c.metric,
            c.treatment,
            _interval(c.absolute),
            _interval(c.relative, percent=True),
            _fmt(c.p_adjusted),
            f"−{100 * (c.variance_reduction or 0):.0f} % var" if c.cuped else "no",
        ]
        for c in report.comparisons
    ]
    return (
        f"Treatment vs {report.control}",
        ["metric", "treatment", "absolute [95 %]", "relative [95 %]", "p (Holm)", "CUPED"],
        rows,
    )


def _guardrails(report: ExperimentReport) -> TableRows:
    rows = [
        [g.metric, g.treatment, _interval(g.change, percent=g.relative), _bound(g), g.status]
        for g in report.guardrails
    ]
    return ("Guardrails", ["metric", "treatment", "change [95 %]", "bound", "status"], rows)


def _bound(guardrail: GuardrailResult) -> str:
    parts = []
    unit = " %" if guardrail.relative else ""
    scale = 100 if guardrail.relative else 1
    if guardrail.max_increase is not None:
        parts.append(f"≤ +{guardrail.max_increase * scale:g}{unit}")
    if guardrail.max_decrease is not None:
        parts.append(f"≥ −{guardrail.max_decrease * scale:g}{unit}")
    return ", ".join(parts)


def print_report(report: ExperimentReport, console: Console | None = None) -> None:
    console = console or Console()
    verdict = report.verdict
    console.print(
        f"[bold]{report.experiment}[/] ({report.mode}, primary metric {report.primary_metric}, "
        f"control {report.control}) — verdict: [{VERDICT_STYLE[verdict.decision]}]"
        f"{headline(report)}[/]"
    )
    for reason in verdict.reasons:
        console.print(f"  • {reason}")
    if report.exploration_verdict is not None:
        alone = report.exploration_verdict
        console.print(
            f"  [dim]the exploration alone would say: {alone.decision}"
            f"{' ' + alone.variant if alone.variant else ''}[/]"
        )
    if verdict.sycophancy:
        console.print(
            f"[bold red]  sycophancy pattern: {', '.join(verdict.sycophancy)}[/] wins on "
            f"{report.primary_metric} while failing a sycophancy guardrail"
        )
    for title, header, rows in tables(report):
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]")
    if report.reward_model is not None:
        console.print(f"[dim]reward scores: {report.reward_model}[/]")
    console.print(f"[dim]analysed in {report.seconds:.2f} s[/]")


# Plots.


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _leaderboard_plot(report: ExperimentReport, path: Path) -> Path | None:
    arena = report.arena
    if arena is None or not arena.leaderboard:
        return None
    rows = list(reversed(arena.leaderboard))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(rows)))
    series = [
        ("rating", "rating", "low", "high", "tab:blue"),
        ("style-controlled", "rating_style_controlled", "style_low", "style_high", "tab:orange"),
    ]
    for offset, (label, value, low, high, color) in enumerate(series):
        ys = [i + (0.15 if offset == 0 else -0.15) for i in range(len(rows))]
        xs = [_or(getattr(r, value), math.nan) for r in rows]
        lows = [_or(getattr(r, low), x) for x, r in zip(xs, rows, strict=True)]
        highs = [_or(getattr(r, high), x) for x, r in zip(xs, rows, strict=True)]
        err = [
            [x - lo for x, lo in zip(xs, lows, strict=True)],
            [hi - x for x, hi in zip(xs, highs, strict=True)],
        ]
        ax.errorbar(xs, ys, xerr=err, fmt="o", color=color, capsize=4, label=label)
    ax.set_yticks(range(len(rows)), [r.variant for r in rows])
    ax.axvline(1000, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("rating (Bradley–Terry, Elo scale; 95 % bootstrap interval)")
    ax.set_title(f"{report.experiment}: leaderboard from {_counted_votes(arena)}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _forest_plot(report: ExperimentReport, path: Path) -> Path | None:
    """Relative lifts with intervals. Metrics without a relative figure (a baseline that can be
    negative or whose interval reaches 0: the analysis gives none) or with a meaningless one
    (interval wider than ±200 %) are left out and named under the plot."""
    shown, left_out = [], []
    for c in report.comparisons:
        r = c.relative
        if r.value is None or r.low is None or r.high is None or r.high - r.low > 4.0:
            left_out.append(c)
        else:
            shown.append(c)
    if not shown:
        return None
    bounds = {(g.metric, g.treatment): g for g in report.guardrails if g.relative}
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.38 * len(shown)))
    for i, c in enumerate(reversed(shown)):
        r = c.relative
        assert r.value is not None and r.low is not None and r.high is not None
        color = "tab:blue" if r.low <= 0 <= r.high else "tab:red"
        err = [[100 * (r.value - r.low)], [100 * (r.high - r.value)]]
        ax.errorbar([100 * r.value], [i], xerr=err, fmt="s", color=color, capsize=3)
        guardrail = bounds.get((c.metric, c.treatment))
        if guardrail is not None:
            for bound, sign in ((guardrail.max_increase, 1), (guardrail.max_decrease, -1)):
                if bound is not None:
                    ax.plot([sign * 100 * bound] * 2, [i - 0.35, i + 0.35], color="black", lw=2)
    ax.set_yticks(range(len(shown)), [f"{c.metric} ({c.treatment})" for c in reversed(shown)])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"change vs {report.control}, % (95 % interval)")
    title = (
        f"{report.experiment}: lift by metric\n(red: interval excludes 0; "
        "black bars: relative guardrails)"
    )
    ax.set_title(title, fontsize=9)
    if left_out:
        names = ", ".join(sorted({c.metric for c in left_out}))
        fig.text(
            0.01, 0.01, f"no relative figure (see the table): {names}", fontsize=7, color="grey"
        )
    fig.tight_layout(rect=(0, 0.03 if left_out else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


P_FLOOR = 1e-10  # the plot's floor: smaller p-values are drawn on it, hollow


def _floored(values: list[float | None]) -> tuple[list[float], list[bool]]:
    points = [math.nan if v is None else max(v, P_FLOOR) for v in values]
    return points, [v is not None and v < P_FLOOR for v in values]


def _sequential_plot(report: ExperimentReport, path: Path) -> Path | None:
    if not report.sequential:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    start = report.start or report.sequential[0].ts
    styles = (
        ("p_value", {"marker": "o", "label": "always-valid p"}),
        ("naive_p_value", {"ls": "--", "alpha": 0.6, "label": "naive fixed-horizon p"}),
    )
    for treatment in sorted({look.treatment for look in report.sequential}):
        looks = [look for look in report.sequential if look.treatment == treatment]
        hours = [(look.ts - start) / 3600 for look in looks]
        for field, style in styles:
            points, floored = _floored([getattr(look, field) for look in looks])
            line = ax.plot(hours, points, **{**style, "label": f"{treatment}: {style['label']}"})
            below = [(h, p) for h, p, f in zip(hours, points, floored, strict=True) if f]
            if below:
                color = line[0].get_color()
                xs, ys = zip(*below, strict=True)
                ax.scatter(xs, ys, marker="v", facecolors="none", edgecolors=color, zorder=3)
    ax.axhline(ALPHA, color="tab:red", lw=1, label=f"α = {ALPHA}")
    ax.set_yscale("log")
    ax.set_ylim(P_FLOOR / 2, 1.5)  # hollow triangles on the floor: p below 1e-10
    ax.set_xlabel("hours since the first exposure")
    ax.set_ylabel("p-value")
    ax.set_title(f"{report.experiment}: {report.primary_metric}, sequential test (mSPRT)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PLOTS = ("leaderboard.png", "lift_forest.png", "sequential_p_value.png")


def write_plots(report: ExperimentReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot this report does not draw must not stay from an earlier one
        (folder / name).unlink(missing_ok=True)
    made = [
        _leaderboard_plot(report, folder / "leaderboard.png"),
        _forest_plot(report, folder / "lift_forest.png"),
        _sequential_plot(report, folder / "sequential_p_value.png"),
    ]
    return [path for path in made if path is not None]


def write_html(report: ExperimentReport, plots: list[Path], folder: Path) -> Path:
    """One self-contained page: verdict, tables, plots inlined as base64 PNG."""
    verdict = report.verdict
    color = {"ship": "#1a7f37", "do not ship": "#cf222e", "keep running": "#9a6700"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.experiment)} report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#1f2328}",
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;",
        "padding:4px 8px;font-size:14px}th{background:#f6f8fa}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{html.escape(report.experiment)}</h1>",
        f"<p>{html.escape(report.mode)} experiment, primary metric "
        f"<b>{html.escape(report.primary_metric)}</b>, control "
        f"<b>{html.escape(report.control)}</b>.</p>",
        f"<h2 style='color:{color[verdict.decision]}'>Verdict: {html.escape(headline(report))}"
        "</h2><ul>",
        *(f"<li>{html.escape(reason)}</li>" for reason in verdict.reasons),
        "</ul>",
    ]
    if verdict.sycophancy:
        parts.append(
            f"<p style='color:#cf222e'><b>Sycophancy pattern:</b> "
            f"{html.escape(', '.join(verdict.sycophancy))} wins on "
            f"{html.escape(report.primary_metric)} while failing a sycophancy guardrail.</p>"
        )
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f"<img alt='{plot.stem}' src='data:image/png;base64,{data}'>")
    for title, header, rows in tables(report):
        parts.append(f"<h3>{html.escape(title)}</h3><table><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts += [f"<p><i>{html.escape(note)}</i></p>" for note in report.notes]
    parts.append(f"<p><small>analysed in {report.seconds:.2f} s</small></p></body></html>")
    path = folder / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _counted_votes(arena: ArenaSection) -> str:
    """ "N votes", and how many more were left out because an answer named a model."""
    counted = f"{arena.votes - arena.voided_votes} votes"
    return f"{counted}; {arena.voided_votes} void" if arena.voided_votes else counted
