// vdiff live canvas view: streams /v1/chat/completions with stream_canvas and draws every frame.
// Plain browser JavaScript, no dependencies. Every URL is relative to the page (../v1/...), so the page
// works under --root-path and behind a path-prefixing proxy.
"use strict";

const API = new URL("../", window.location.href);
const KEY_STORAGE = "vdiff-api-key";
const $ = (selector, root = document) => root.querySelector(selector);
const panels = [];

function apiKey() {
  return window.sessionStorage.getItem(KEY_STORAGE) || "";
}

function headers() {
  const result = { "Content-Type": "application/json" };
  if (apiKey()) result.Authorization = `Bearer ${apiKey()}`;
  return result;
}

async function loadModels() {
  const status = $("#model-status");
  status.textContent = "loading models…";
  const response = await fetch(new URL("v1/models", API), { headers: headers() });
  if (response.status === 401) {
    $("#key-row").hidden = false;
    status.textContent = apiKey() ? "that key was refused; enter another" : "this server needs an API key";
    $("#api-key").focus();
    return;
  }
  const body = await response.json();
  const select = $("#model");
  select.replaceChildren(...body.data.map((model) => new Option(model.id, model.id)));
  status.textContent = `${body.data.length} served`;
}

function knobValues(panel) {
  const values = {};
  for (const input of panel.el.querySelectorAll("[data-knob]")) {
    if (input.value === "") continue;
    values[input.dataset.knob] = input.type === "number" ? Number(input.value) : input.value;
  }
  // knobs of one policy only: the server refuses a knob the chosen policy would ignore
  if (values.decoding !== "threshold") delete values.threshold;
  if (values.decoding !== "apd") {
    delete values.apd_mixture_weight;
    delete values.apd_max_lookahead;
  }
  return values;
}

function addPanel(knobs = {}) {
  const fragment = $("#panel-template").content.cloneNode(true);
  const el = fragment.querySelector(".panel");
  const panel = { el, number: panels.length + 1 };
  el.dataset.panel = String(panel.number);
  $(".panel-title", el).textContent = `Run ${panel.number}`;
  for (const input of el.querySelectorAll("[data-knob]")) {
    input.id = `p${panel.number}-${input.dataset.knob}`;
    if (knobs[input.dataset.knob] !== undefined) input.value = String(knobs[input.dataset.knob]);
  }
  $(".remove", el).addEventListener("click", () => {
    panels.splice(panels.indexOf(panel), 1);
    el.remove();
  });
  $("#panels").append(fragment);
  panels.push(panel);
  return panel;
}

function colour(token, step, colourBy) {
  if (colourBy === "confidence" && token.confidence !== null) {
    return `hsl(${Math.round(token.confidence * 120)}, 70%, 78%)`; // red (unsure) to green (sure)
  }
  return `hsl(${(step * 47) % 360}, 65%, 80%)`;
}

function shown(text) {
  if (text === "") return "∅";
  const special = /^<\|(.+)\|>$/.exec(text); // <|endoftext|> -> ⟨endoft⟩: the canvas stays readable
  if (special) return `⟨${special[1].slice(0, 6)}⟩`;
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

function buildCanvas(panel, frame) {
  const canvas = $(".canvas", panel.el);
  const starts = new Set(frame.blocks.map((block) => block[0]));
  panel.cells = [];
  const cells = [];
  for (let position = 0; position < frame.canvas_length; position += 1) {
    const cell = document.createElement("span");
    cell.className = "cell masked";
    if (starts.has(position) && position > 0) cell.classList.add("block-start");
    cell.textContent = "▒";
    cell.title = `position ${position}: masked`;
    cells.push(cell);
  }
  canvas.replaceChildren(...cells);
  canvas.setAttribute("aria-label", `canvas of ${frame.canvas_length} positions in ${frame.blocks.length} blocks`);
  panel.cells = cells;
}

function drawFrame(panel, frame) {
  if (!panel.cells) buildCanvas(panel, frame);
  const colourBy = $("#colour-by").value;
  for (const cell of panel.el.querySelectorAll(".cell.fresh, .cell.cursor")) {
    cell.classList.remove("fresh", "cursor");
  }
  const [blockStart, blockEnd] = frame.blocks[frame.block];
  for (let position = blockStart; position < blockEnd; position += 1) panel.cells[position].classList.add("cursor");
  for (const token of frame.committed) {
    const cell = panel.cells[token.position];
    cell.classList.remove("masked");
    cell.classList.add("fresh");
    cell.textContent = shown(token.text);
    cell.style.background = colour(token, frame.step, colourBy);
    cell.dataset.step = String(frame.step);
    cell.dataset.confidence = token.confidence === null ? "" : String(token.confidence);
    const confidence = token.confidence === null ? "n/a" : token.confidence.toFixed(3);
    cell.title = `position ${token.position}: ${JSON.stringify(token.text)} (id ${token.id}), step ${frame.step}, confidence ${confidence}`;
  }
  panel.cells.forEach((cell, position) => cell.classList.toggle("beyond", position >= frame.answer_end));
  $(".step-count", panel.el).textContent = String(frame.step);
  $(".mask-count", panel.el).textContent = String(frame.num_masked);
  const action = Object.entries(frame.action)
    .filter(([, value]) => value !== null)
    .map(([name, value]) => `${name} ${value}`)
    .join(", ");
  $(".action", panel.el).textContent = `${frame.policy}: ${action}`;
  panel.maskHistory.push(frame.num_masked);
  panel.el.dataset.frames = String(panel.maskHistory.length);
  panel.el.dataset.masks = panel.maskHistory.join(",");
}

function summarize(panel) {
  const steps = panel.maskHistory.length;
  const tokens = panel.usage ? panel.usage.completion_tokens : 0;
  const seconds = panel.elapsed / 1000;
  const rows = [
    ["steps", String(steps)],
    ["tokens", String(tokens)],
    ["tokens per forward", steps ? (tokens / steps).toFixed(2) : "–"],
    ["tokens/s", seconds > 0 ? (tokens / seconds).toFixed(1) : "–"],
    ["wall time", `${seconds.toFixed(2)} s`],
    ["finish", panel.finishReason || "–"],
  ];
  const list = $(".summary", panel.el);
  list.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

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
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function runPanel(panel, prompt) {
  const el = panel.el;
  el.dataset.state = "running";
  panel.cells = null;
  panel.maskHistory = [];
  panel.usage = null;
  panel.finishReason = null;
  $(".canvas", el).replaceChildren();
  $(".answer", el).textContent = "";
  $(".summary", el).replaceChildren();
  $(".error", el).textContent = "";
  delete el.dataset.frames;
  delete el.dataset.masks;
  const body = {
    model: $("#model").value,
    messages: [{ role: "user", content: prompt }],
    max_tokens: Number($("#max-tokens").value),
    stream: true,
    stream_canvas: true,
    stream_options: { include_usage: true },
    ...knobValues(panel),
  };
  const started = performance.now();
  try {
    const response = await fetch(new URL("v1/chat/completions", API), {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error((error.error && error.error.message) || `HTTP ${response.status}`);
    }
    const delay = Number($("#delay").value) || 0;
    let answer = "";
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
      if (chunk.vdiff_canvas) {
        drawFrame(panel, chunk.vdiff_canvas);
        if (delay) await sleep(delay);
      }
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) answer += choice.delta.content;
        if (choice.finish_reason) panel.finishReason = choice.finish_reason;
      }
      if (chunk.usage) panel.usage = chunk.usage;
      $(".answer", el).textContent = answer;
    }
    panel.elapsed = performance.now() - started;
    summarize(panel);
    el.dataset.state = "done";
  } catch (error) {
    $(".error", el).textContent = String(error.message || error);
    el.dataset.state = "error";
  }
}

async function runAll() {
  const button = $("#run");
  button.disabled = true;
  try {
    const prompt = $("#prompt").value;
    await Promise.all(panels.map((panel) => runPanel(panel, prompt)));
  } finally {
    button.disabled = false;
  }
}

function start() {
  $("#run").addEventListener("click", runAll);
  $("#add-panel").addEventListener("click", () => addPanel({ decoding: "threshold" }).el.querySelector("select").focus());
  $("#save-key").addEventListener("click", () => {
    window.sessionStorage.setItem(KEY_STORAGE, $("#api-key").value);
    loadModels();
  });
  $("#api-key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") $("#save-key").click();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) runAll();
  });
  addPanel({ decoding: "reference" });
  addPanel({ decoding: "threshold", threshold: 0.9 });
  loadModels().catch((error) => {
    $("#model-status").textContent = `cannot list models: ${error.message}`;
  });
}

start();
