// The arena page: two hidden variants answer side by side, the rater votes, then sees who wrote
// which answer. Answers are inserted as text only.
import { api, el, explain, keyForm, say, send } from "./common.js";

const RATER = "arena-serve.rater";
const state = {
  history: [], // the conversation so far: [{role, content}], the preferred answers kept
  asked: null, // the messages of the battle on screen
  battle: null, // its id, once it has one
  completions: [], // its sides' completion ids
  answers: ["", ""],
  voted: false,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function rater() {
  const typed = $("rater").value.trim();
  if (typed) {
    localStorage.setItem(RATER, typed);
    return typed;
  }
  let kept = localStorage.getItem(RATER);
  if (!kept) {
    kept = `rater-${crypto.randomUUID().slice(0, 8)}`;
    localStorage.setItem(RATER, kept);
  }
  $("rater").value = kept;
  return kept;
}

let latest = 0; // the newest list request: an older one that answers later is dropped

async function loadArenas() {
  const select = $("experiment");
  const mine = ++latest;
  try {
    const models = await api("/v1/models");
    if (mine !== latest) return;
    const arenas = models.data.filter(
      (m) => m.arena && m.arena.kind === "experiment" && m.arena.mode === "arena",
    );
    const chosen = select.value;
    select.replaceChildren(
      ...arenas.map((arena) => el("option", { value: arena.id, selected: arena.id === chosen }, arena.id)),
    );
    if (!arenas.length) say("This gateway runs no arena experiment.", "info");
  } catch (error) {
    if (mine !== latest) return;
    select.replaceChildren();
    say(explain(error, "client"));
  }
  update();
}

function update() {
  const waiting = state.battle !== null && !state.voted;
  $("send").disabled = state.busy || waiting || !$("experiment").value;
  $("regenerate").disabled = state.busy || state.asked === null;
  for (const button of document.querySelectorAll("[data-vote]")) {
    button.disabled = state.busy || state.battle === null || state.voted;
  }
}

function showTurns() {
  const list = $("turns");
  list.replaceChildren(
    ...state.history.map((m) =>
      el("li", {}, el("strong", {}, m.role === "user" ? "You: " : "Preferred answer: "), m.content),
    ),
  );
}

async function battle(messages) {
  state.busy = true;
  state.asked = messages;
  state.battle = null;
  state.completions = [];
  state.answers = ["", ""];
  state.voted = false;
  $("answer-a").textContent = "";
  $("answer-b").textContent = "";
  $("reveal").textContent = "";
  say("");
  update();
  try {
    const response = await send("/v1/chat/completions", {
      method: "POST",
      body: { model: $("experiment").value, messages, stream: true, user: rater() },
    });
    state.battle = response.headers.get("x-battle-id");
    await read(response);
  } catch (error) {
    say(explain(error, "client"));
    state.battle = null;
  } finally {
    state.busy = false;
    update();
  }
  if (state.battle !== null) document.querySelector("[data-vote='a']").focus(); // vote next
}

async function read(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ") && line !== "data: [DONE]") chunk(JSON.parse(line.slice(6)));
      }
    }
  }
}

function chunk(payload) {
  if (payload.error) {
    say(`The battle failed: ${payload.error.message}`);
    return;
  }
  state.battle = state.battle || payload.id;
  if (payload.arena && payload.arena.completion_id) state.completions.push(payload.arena.completion_id);
  for (const choice of payload.choices || []) {
    const side = choice.index === 0 ? 0 : 1;
    const text = (choice.delta && choice.delta.content) || "";
    state.answers[side] += text;
    $(side === 0 ? "answer-a" : "answer-b").textContent = state.answers[side];
  }
}

async function vote(value) {
  if (state.battle === null || state.voted || state.busy) return;
  state.busy = true;
  update();
  try {
    const answer = await api("/v1/feedback", {
      method: "POST",
      body: {
        kind: "vote",
        battle_id: state.battle,
        value,
        user: rater(),
        idempotency_key: `vote-${state.battle}`,
      },
    });
    state.voted = true;
    if (answer.reveal) {
      $("reveal").textContent = `A was ${answer.reveal.a}; B was ${answer.reveal.b}.`;
    }
    if (value !== "both_bad") {
      const kept = value === "b" ? state.answers[1] : state.answers[0];
      state.history = [...state.asked, { role: "assistant", content: kept }];
    } else {
      state.history = state.asked.slice(0, -1); // neither answer is worth continuing from
    }
    showTurns();
    say(`Vote recorded (${value.replace("_", " ")}).`, "info");
  } catch (error) {
    say(explain(error, "client"));
  } finally {
    state.busy = false;
    update();
  }
}

async function regenerate() {
  if (state.asked === null || state.busy) return;
  const old = [...state.completions];
  for (const id of old) {
    // The rater asked for other answers instead of these: an implicit signal, best effort.
    api("/v1/feedback", {
      method: "POST",
      body: { kind: "regenerate", completion_id: id, user: rater(), idempotency_key: `regen-${id}` },
    }).catch(() => {});
  }
  await battle(state.asked);
}

function newConversation() {
  state.history = [];
  state.asked = null;
  state.battle = null;
  state.voted = false;
  state.answers = ["", ""];
  $("answer-a").textContent = "";
  $("answer-b").textContent = "";
  $("reveal").textContent = "";
  showTurns();
  say("");
  update();
  $("prompt").focus();
}

function submit(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || $("send").disabled) return;
  $("prompt").value = "";
  battle([...state.history, { role: "user", content: text }]);
}

function keys(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const votes = { 1: "a", 2: "b", 3: "tie", 4: "both_bad" };
  if (votes[event.key]) vote(votes[event.key]);
  else if (event.key === "r") regenerate();
  else if (event.key === "n") newConversation();
}

$("rater").value = localStorage.getItem(RATER) || "";
$("ask").addEventListener("submit", submit);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit(event);
});
$("regenerate").addEventListener("click", regenerate);
$("new-conversation").addEventListener("click", newConversation);
$("experiment").addEventListener("change", newConversation);
for (const button of document.querySelectorAll("[data-vote]")) {
  button.addEventListener("click", () => vote(button.dataset.vote));
}
document.addEventListener("keydown", keys);
keyForm("client", loadArenas);
loadArenas();
