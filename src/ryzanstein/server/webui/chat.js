// Ryzanstein's chat page: a client of the public API (docs/server.md), no framework, no build step.
// It streams POST v1/chat/completions and reads each chunk's "ryzanstein" field: the chunk's text token by
// token with how each came ([text, "step" | "accepted" | "recovered" | "bonus"]) and the rounds completed since
// the previous chunk ({k, drafted, accepted}). The conversation lives in this page only.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "ryzanstein.apiKey";
const SETTINGS = ["temperature", "top_p", "top_k", "max_tokens", "seed", "k", "policy"];
const state = { model: null, messages: [], controller: null };

// --- talking to the server --------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// One sentence for a failed call: the server's own message, and for 401 what to do about it.
async function explain(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status */ }
  if (response.status === 401) {
    return "The server refused the API key (401): open Settings and enter the key the server was started " +
           `with (--api-key). The server said: ${message}`;
  }
  return `The server answered ${response.status}: ${message}`;
}

// The server-sent events of a streamed response, each parsed from JSON, until [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function loadModel() {
  let response;
  try {
    response = await fetch("v1/models", { headers: headers() });
  } catch (e) {
    $("model").textContent = "server unreachable";
    showError(`Cannot reach the server: ${e.message}`);
    return;
  }
  if (!response.ok) {
    $("model").textContent = "not connected";
    showError(await explain(response));
    return;
  }
  const card = (await response.json()).data[0];
  const ext = card.ryzanstein || {};
  state.model = card.id;
  $("model").textContent = `${card.id} · draft ${ext.draft ?? "?"} · ${ext.backend ?? "?"} backend · ` +
                           `context ${card.max_model_len} tokens`;
  showError("");
}

function requestBody() {
  const number = (id) => { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); };
  const k = $("k").value.trim();
  const system = $("system").value.trim();
  const speculative = {};  // absent fields: the server's --k and --policy
  if (k) speculative.k = k === "auto" ? "auto" : Number(k);
  if ($("policy").value) speculative.policy = $("policy").value;
  return {
    model: state.model ?? undefined,
    messages: system ? [{ role: "system", content: system }, ...state.messages] : state.messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: number("temperature"), top_p: number("top_p"), top_k: number("top_k"),
    max_tokens: number("max_tokens"), seed: number("seed"),
    speculative,
  };
}

// --- the page ---------------------------------------------------------------------------------------------------
function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function addMessage(role, text) {
  const root = document.createElement("div");
  root.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "you" : (state.model ?? "assistant");
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  const note = document.createElement("span");
  note.className = "note";
  root.append(who, body, note);
  $("log").append(root);
  root.scrollIntoView({ block: "end" });
  return { root, body, note };
}

// The chunk's text, each token a <span class="t KIND"> when the server said how the tokens came.
function appendTokens(body, text, tokens) {
  if (!tokens || tokens.map((t) => t[0]).join("") !== text) {
    body.append(document.createTextNode(text));
    return;
  }
  for (const [piece, kind] of tokens) {
    const span = document.createElement("span");
    span.className = `t ${kind}`;
    span.textContent = piece;
    body.append(span);
  }
}

// Tokens/s, acceptance and the K strip of the answer being streamed.
class Live {
  constructor() {
    this.tokens = 0; this.rounds = 0; this.drafted = 0; this.accepted = 0; this.first = null;
    $("kstrip").replaceChildren();
    this.show();
  }
  add(tokens, rounds) {
    if (tokens && tokens.length && this.first === null) this.first = performance.now();
    this.tokens += tokens ? tokens.length : 0;
    for (const r of rounds || []) {
      this.rounds += 1; this.drafted += r.drafted; this.accepted += r.accepted;
      const bar = document.createElement("div");
      bar.className = r.k > 0 ? "k" : "k plain";
      bar.title = `K ${r.k}: drafted ${r.drafted}, accepted ${r.accepted}`;
      if (r.k > 0) {
        bar.style.height = `${Math.min(40, 4 + 4.5 * r.k)}px`;  // K 8 fills the strip
        const a = document.createElement("div");
        a.className = "a";
        a.style.height = `${r.drafted ? (100 * r.accepted) / r.k : 0}%`;
        bar.append(a);
      }
      const strip = $("kstrip");
      strip.append(bar);
      while (strip.childElementCount > 180) strip.firstElementChild.remove();
    }
    this.show();
  }
  // The answer's end: the server's own figures (its token count includes the end-of-answer token).
  finish(summary, usage) {
    if (usage) $("fig-tokens").textContent = `${usage.completion_tokens} tokens`;
    if (!summary) return;
    $("fig-rate").textContent = `${summary.tokens_per_s.toFixed(1)} tok/s`;
    if (summary.num_draft_tokens) {
      $("fig-acceptance").textContent = `acceptance ${Math.round(100 * summary.acceptance_rate)}%`;
    }
    if (summary.rounds) $("fig-length").textContent = `${summary.mean_acceptance_length.toFixed(2)} tokens/forward`;
  }
  show() {
    const seconds = this.first === null ? 0 : (performance.now() - this.first) / 1000;
    $("fig-tokens").textContent = `${this.tokens} tokens`;
    $("fig-rate").textContent = seconds > 0 && this.tokens > 1 ? `${((this.tokens - 1) / seconds).toFixed(1)} tok/s` : "– tok/s";
    $("fig-acceptance").textContent = this.drafted ? `acceptance ${Math.round((100 * this.accepted) / this.drafted)}%` : "acceptance –";
    $("fig-length").textContent = this.rounds ? `${((this.accepted + this.rounds) / this.rounds).toFixed(2)} tokens/forward` : "– tokens/forward";
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}

function summaryNote(summary, usage) {
  const parts = [];
  if (usage) parts.push(`${usage.completion_tokens} tokens`);
  if (summary) {
    parts.push(`${summary.tokens_per_s.toFixed(1)} tok/s`);
    if (summary.num_draft_tokens) {
      parts.push(`acceptance ${Math.round(100 * summary.acceptance_rate)}%`,
                 `${summary.mean_acceptance_length.toFixed(2)} tokens/forward`,
                 `K mean ${summary.k_chosen.mean.toFixed(1)}`);
    } else if (summary.speculation_stopped) {
      parts.push("no drafts verified");
    }
  }
  return parts.join(" · ");
}

async function send(text) {
  showError("");
  const conversation = state.messages;  // "New chat" mid-answer starts another; this answer stays in its own
  conversation.push({ role: "user", content: text });
  const asked = addMessage("user", text);
  const view = addMessage("assistant", "");
  view.root.classList.add("streaming");
  const live = new Live();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let answer = "", summary = null, usage = null, failure = null;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody()), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await explain(response));
    for await (const data of events(response)) {
      if (data.error) throw new Error(`The server stopped the answer: ${data.error.message}`);
      if (data.usage) usage = data.usage;
      const choice = data.choices && data.choices[0];
      if (!choice) continue;
      if (choice.finish_reason) {
        summary = data.ryzanstein || null;
        continue;
      }
      const ext = data.ryzanstein || {};
      const content = choice.delta && choice.delta.content;
      if (content) {
        answer += content;
        appendTokens(view.body, content, ext.tokens);
        view.root.scrollIntoView({ block: "end" });
      }
      live.add(ext.tokens, ext.rounds);
    }
  } catch (e) {
    failure = e.name === "AbortError" ? "stopped" : e.message;
  } finally {
    state.controller = null;
    setBusy(false);
    view.root.classList.remove("streaming");
  }
  if (failure === "stopped") {
    view.note.textContent = "stopped";
    view.root.classList.add("stopped");
  } else if (failure) {
    showError(failure);
  } else {
    view.note.textContent = summaryNote(summary, usage);
    live.finish(summary, usage);
    view.root.classList.add("done");
  }
  if (answer) {
    conversation.push({ role: "assistant", content: answer });
  } else {  // nothing came back: the question leaves the conversation and returns to the input box
    conversation.pop();
    asked.root.remove();
    view.root.remove();
    if (failure !== "stopped" && !$("input").value) $("input").value = text;
  }
}

function describeSettings() {
  const v = (id) => $(id).value.trim() || (id === "seed" ? "random" : "(server default)");
  $("settings-box").querySelector("summary").textContent =
    `Settings: temperature ${v("temperature")} · top_p ${v("top_p")} · top_k ${v("top_k")} · ` +
    `max_tokens ${v("max_tokens")} · seed ${v("seed")} · K ${v("k")} · policy ${v("policy")}`;
}

// --- wiring -----------------------------------------------------------------------------------------------------
$("api-key").value = localStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem(KEY_STORE, $("api-key").value.trim());
  loadModel();
});
for (const id of SETTINGS) $(id).addEventListener("change", describeSettings);
$("settings").addEventListener("submit", (event) => event.preventDefault());
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.messages = [];
  $("log").replaceChildren();
  new Live();
  showError("");
});
$("colour").addEventListener("change", () => document.body.classList.toggle("plain", !$("colour").checked));
describeSettings();
loadModel();
$("input").focus();
