// The report page: the verdict with its reasons, guardrails, the leaderboard with intervals
// (plain and style-controlled), lift per metric and the sequential p-value over time, drawn
// here from the report's JSON (`GET /v1/experiments/{name}/report`).
import { api, el, explain, fmt, interval, keyForm, say } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function table(caption, head, rows) {
  return el(
    "table",
    {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => (c instanceof Node ? c : el("td", {}, c)))))),
  );
}

const status = (text) => el("td", { class: `status-${text}` }, text);

/** Horizontal intervals, one row per item: [{label, value, low, high, styled?}]. */
function whiskers(title, items, { zero = null, styled = false } = {}) {
  const values = items.flatMap((i) => [i.low, i.high, i.value, ...(styled ? [i.styledLow, i.styledHigh] : [])]);
  const known = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (!known.length) return null;
  let min = Math.min(...known, ...(zero === null ? [] : [zero]));
  let max = Math.max(...known, ...(zero === null ? [] : [zero]));
  if (min === max) [min, max] = [min - 1, max + 1];
  const left = 240, right = 660, rowH = styled ? 34 : 24, top = 10;
  const height = top + items.length * rowH + 30;
  const x = (v) => left + ((v - min) / (max - min)) * (right - left);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 700 ${height}`, role: "img", "aria-label": title });
  if (zero !== null) chart.append(svg("line", { class: "zero", x1: x(zero), x2: x(zero), y1: top, y2: height - 25 }));
  items.forEach((item, i) => {
    const y = top + i * rowH + 10;
    chart.append(svg("text", { x: 4, y: y + 4 }, item.label));
    if (item.low !== null && item.high !== null) {
      chart.append(svg("line", { class: "whisker", x1: x(item.low), x2: x(item.high), y1: y, y2: y }));
    }
    if (item.value !== null) chart.append(svg("circle", { class: "dot", cx: x(item.value), cy: y, r: 4 }));
    if (styled && item.styledLow !== null && item.styledHigh !== null) {
      chart.append(svg("line", { class: "whisker styled", x1: x(item.styledLow), x2: x(item.styledHigh), y1: y + 10, y2: y + 10 }));
      if (item.styledValue !== null) chart.append(svg("circle", { class: "styled-dot", cx: x(item.styledValue), cy: y + 10, r: 4 }));
    }
  });
  const base = height - 20;
  chart.append(svg("line", { class: "axis", x1: left, x2: right, y1: base, y2: base }));
  chart.append(svg("text", { x: left, y: base + 15 }, fmt(min, 4)));
  chart.append(svg("text", { x: right - 40, y: base + 15 }, fmt(max, 4)));
  return el("figure", {}, el("figcaption", {}, title), chart);
}

/** Always-valid and naive p-values per look, on a log scale down to 1e-4, with 0.05 marked. */
function pValues(looks) {
  const known = looks.filter((l) => l.p_value !== null);
  if (!known.length) return null;
  const treatments = [...new Set(known.map((l) => l.treatment))];
  const times = known.map((l) => l.ts);
  const t0 = Math.min(...times), t1 = Math.max(...times) || t0 + 1;
  const left = 50, right = 580, top = 10, bottom = 210; // p from 1 (top) down to 1e-4
  const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1)) * (right - left);
  const y = (p) => top + (Math.min(4, -Math.log10(Math.max(p, 1e-4))) / 4) * (bottom - top);
  const chart = svg("svg", { class: "chart", viewBox: "0 0 600 240", role: "img", "aria-label": "Sequential p-value over time" });
  chart.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: bottom }));
  chart.append(svg("line", { class: "zero", x1: left, x2: right, y1: y(0.05), y2: y(0.05) }));
  chart.append(svg("text", { x: 4, y: y(1) + 4 }, "1"));
  chart.append(svg("text", { x: 4, y: y(0.05) + 4 }, "0.05"));
  chart.append(svg("text", { x: 4, y: y(1e-4) }, "1e-4"));
  for (const treatment of treatments) {
    const mine = known.filter((l) => l.treatment === treatment);
    const line = (key) => mine.filter((l) => l[key] !== null).map((l) => `${x(l.ts)},${y(l[key])}`).join(" ");
    chart.append(svg("polyline", { class: "line", points: line("p_value") }));
    chart.append(svg("polyline", { class: "naive", points: line("naive_p_value") }));
    for (const look of mine) {
      if (look.p_value !== null) chart.append(svg("circle", { class: "dot", cx: x(look.ts), cy: y(look.p_value), r: 3 }));
    }
  }
  chart.append(svg("text", { x: left, y: 235 }, "solid: always-valid p-value; dashed: naive p-value; time →"));
  return el("figure", {}, el("figcaption", {}, "Sequential p-value over time"), chart);
}

function verdict(report) {
  const v = report.verdict;
  const decision = v.decision.replaceAll(" ", "-");
  const parts = [
    el("h2", {}, "Verdict: ", el("span", { class: `decision-${decision}` }, v.decision + (v.variant ? ` ${v.variant}` : ""))),
    el("ul", {}, v.reasons.map((r) => el("li", {}, r))),
  ];
  if (v.sycophancy.length) parts.push(el("p", { class: "status-fail" }, `Sycophancy pattern: ${v.sycophancy.join(", ")}`));
  if (report.exploration_verdict) {
    const e = report.exploration_verdict;
    parts.push(el("p", { class: "hint" }, `The exploration alone would say: ${e.decision}${e.variant ? ` ${e.variant}` : ""}.`));
  }
  for (const note of report.notes) parts.push(el("p", { class: "hint" }, `Note: ${note}`));
  return el("section", { "aria-label": "Verdict" }, parts);
}

function guardrails(report) {
  if (!report.guardrails.length) return null;
  const bound = (g) => [g.max_increase !== null ? `≤ +${g.max_increase}` : null, g.max_decrease !== null ? `≥ −${g.max_decrease}` : null].filter(Boolean).join(", ");
  return table(
    "Guardrails",
    ["Metric", "Treatment", "Change [interval]", "Bound", "Status"],
    report.guardrails.map((g) => [g.metric, g.treatment, interval(g.change), `${bound(g)}${g.relative ? " (relative)" : ""}`, status(g.status)]),
  );
}

function leaderboard(report) {
  const arena = report.arena;
  if (!arena || !arena.leaderboard.length) return [];
  const rows = arena.leaderboard;
  return [
    table(
      `Leaderboard (${arena.votes} votes from ${arena.voters} voters)`,
      ["Variant", "Rating [interval]", "Style-controlled [interval]", "Battles"],
      rows.map((r) => [
        r.variant,
        `${fmt(r.rating, 4)} [${fmt(r.low, 4)}, ${fmt(r.high, 4)}]`,
        `${fmt(r.rating_style_controlled, 4)} [${fmt(r.style_low, 4)}, ${fmt(r.style_high, 4)}]`,
        el("td", { class: "num" }, String(r.battles)),
      ]),
    ),
    whiskers(
      "Ratings with 95 % intervals (blue: plain; amber: style-controlled)",
      rows.map((r) => ({
        label: r.variant, value: r.rating, low: r.low, high: r.high,
        styledValue: r.rating_style_controlled, styledLow: r.style_low, styledHigh: r.style_high,
      })),
      { styled: true },
    ),
  ];
}

function lifts(report) {
  if (!report.comparisons.length) return [];
  const rows = report.comparisons;
  // One scale: the relative change, where the metric has one (never for signed metrics).
  const relative = rows.filter((c) => c.relative && c.relative.value !== null);
  return [
    table(
      "Lift per metric",
      ["Metric", "Treatment", "Absolute [interval]", "Relative [interval]", "p (Holm)"],
      rows.map((c) => [c.metric, c.treatment, interval(c.absolute), interval(c.relative), el("td", { class: "num" }, fmt(c.p_adjusted))]),
    ),
    whiskers(
      "Relative change against the control, 95 % intervals (metrics with a relative change)",
      relative.map((c) => ({ label: `${c.metric} · ${c.treatment}`, ...c.relative })),
      { zero: 0 },
    ),
  ];
}

function bandit(report) {
  if (!report.bandit) return null;
  return table(
    `Bandit: mean ${report.bandit.reward} per arm, inverse-propensity weighted (weights version ${report.bandit.weights_version ?? "–"})`,
    ["Arm", "Rated completions", "Hájek mean [interval]", "Plain mean (biased)", "Share now"],
    report.bandit.arms.map((arm) => [
      arm.variant,
      el("td", { class: "num" }, String(arm.completions)),
      interval(arm.hajek),
      fmt(arm.naive),
      fmt(report.bandit.shares ? report.bandit.shares[arm.variant] : null),
    ]),
  );
}

function render(report) {
  const holder = $("report");
  const units = Object.entries(report.units).map(([group, n]) => `${group}: ${n}`).join(", ");
  const parts = [
    el("p", {}, `${report.experiment} (${report.mode}), primary metric ${report.primary_metric}, control ${report.control}. Units: ${units || "none yet"}.`),
    verdict(report),
    guardrails(report),
    bandit(report),
    ...leaderboard(report),
    ...lifts(report),
    pValues(report.sequential),
  ];
  if (report.confirmation) {
    parts.push(el("h2", {}, "Confirmation run"), ...leaderboard(report.confirmation), ...lifts(report.confirmation));
  }
  holder.replaceChildren(...parts.filter(Boolean));
}

let latest = 0; // the newest request: an older one that answers later is dropped

async function show(name) {
  if (!name) return;
  const mine = ++latest;
  $("status").textContent = `Computing the report of ${name}…`;
  try {
    const report = await api(`/v1/experiments/${encodeURIComponent(name)}/report`, { kind: "admin" });
    if (mine !== latest) return;
    render(report); // the report on screen stays until the new one is drawn
    say("");
  } catch (error) {
    if (mine !== latest) return;
    $("report").replaceChildren();
    say(explain(error, "admin"));
  } finally {
    if (mine === latest) $("status").textContent = "";
  }
}

async function load() {
  const select = $("experiment");
  const wanted = new URLSearchParams(location.search).get("experiment");
  try {
    const listing = await api("/v1/experiments", { kind: "admin" });
    select.replaceChildren(...listing.data.map((e) => el("option", { value: e.name, selected: e.name === wanted }, e.name)));
    if (wanted) await show(wanted);
  } catch (error) {
    say(explain(error, "admin"));
  }
}

$("pick").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("experiment").value;
  history.replaceState(null, "", `?experiment=${encodeURIComponent(name)}`);
  show(name);
});
keyForm("admin", load);
load();
