// The experiments page: every experiment with its state, arms, allocation and revision.
import { api, el, explain, keyForm, say } from "./common.js";

function arms(experiment) {
  const shares = experiment.arm_shares || null;
  return experiment.arms
    .map((arm) => {
      const share = shares && shares[arm.variant] !== undefined ? ` (share ${shares[arm.variant].toFixed(3)})` : "";
      return `${arm.variant} × ${arm.weight}${share}`;
    })
    .join(", ");
}

function row(experiment) {
  const link = el("a", { href: `report.html?experiment=${encodeURIComponent(experiment.name)}` }, experiment.name);
  const allocation =
    experiment.allocation_now === experiment.allocation
      ? String(experiment.allocation)
      : `${experiment.allocation_now} now (configured ${experiment.allocation})`;
  const notes = [];
  if (experiment.ramp_hold) notes.push(`ramp held: ${experiment.ramp_hold.guardrail} failed`);
  for (const [arm, hold] of Object.entries(experiment.arm_holds || {})) {
    notes.push(`${arm} held: ${hold.guardrail} failed`);
  }
  if (experiment.confirm) notes.push(`confirming ${experiment.confirm.variant}`);
  return el(
    "tr",
    {},
    el("th", { scope: "row" }, link),
    el("td", {}, experiment.mode),
    el("td", {}, experiment.state),
    el("td", {}, arms(experiment)),
    el("td", { class: "num" }, allocation),
    el("td", {}, experiment.unit),
    el("td", {}, experiment.layer),
    el("td", {}, el("code", {}, experiment.revision || "–")),
    el("td", {}, notes.join("; ") || "–"),
  );
}

let latest = 0; // the newest request: an older one that answers later is dropped

async function load() {
  const holder = document.getElementById("experiments");
  const mine = ++latest;
  try {
    const listing = await api("/v1/experiments", { kind: "admin" });
    if (mine !== latest) return;
    holder.replaceChildren(); // the listing on screen stays until the new one is drawn
    document.getElementById("revision").textContent = `experiments config revision ${listing.revision}`;
    const head = ["Experiment", "Mode", "State", "Arms (weight)", "Allocation", "Unit", "Layer", "Revision", "Notes"];
    holder.append(
      el(
        "table",
        {},
        el("caption", {}, `${listing.data.length} experiments`),
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, listing.data.map(row)),
      ),
    );
    if (listing.global_holdout) {
      holder.append(el("p", {}, `Global holdout: ${listing.global_holdout.fraction} of all units.`));
    }
  } catch (error) {
    if (mine !== latest) return;
    holder.replaceChildren();
    say(explain(error, "admin"));
  }
}

document.getElementById("refresh").addEventListener("click", load);
keyForm("admin", load);
load();
