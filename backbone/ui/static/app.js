// The backbone dashboard: polls the server's JSON endpoints and redraws the
// tables and charts (chart.js draws, panel.js is the chosen stream's panel).
// Plain JavaScript, no build step, nothing fetched from elsewhere. Every value
// from Redis is put in the page as text (textContent), never as markup.
"use strict";

const WINDOW_MS = 10 * 60 * 1000;
const TAIL_KEEP = 200;
const TOKEN_KEY = "backbone-ui-token";

const state = {
  interval: 1000,
  seq: 0,
  points: [],
  actions: false,
  token: sessionStorage.getItem(TOKEN_KEY),
  selected: null,
  streams: [],
  tail: { uri: null, cursor: null, paused: false },
  letters: { uri: null, key: null, at: 0 },
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- formatting ------------------------------------------------------------------

function count(value) { return value === null || value === undefined ? "?" : String(value); }
function rate(value) {
  if (value === null || value === undefined) return "-";
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
}
function size(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes / 1024;
  for (const unit of ["KiB", "MiB", "GiB"]) {
    if (value < 1024 || unit === "GiB") return `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return "?";
}
function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}
function clock(iso) { return iso ? new Date(iso).toLocaleTimeString() : "-"; }
function cell(text, cls, field) { return el("td", { class: cls, "data-field": field }, text); }

// --- server calls ----------------------------------------------------------------

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function act(action, uri, ids) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers["X-Backbone-Token"] = state.token;
  const response = await fetch(`/api/deadletters/${action}`, {
    method: "POST", headers, body: JSON.stringify({ uri, ids }), cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { forgetToken(); }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// --- status and banner -----------------------------------------------------------

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function banner(kind, text) {
  const node = $("banner");
  node.hidden = !text;
  node.dataset.state = kind || "";
  node.textContent = text || "";
}

function toast(text, kind) {
  const node = $("toast");
  node.textContent = text;
  node.dataset.kind = kind || "info";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 6000);
}

// --- the snapshot ----------------------------------------------------------------

async function tick() {
  try {
    const snapshot = await getJSON("/api/snapshot");
    await absorb(snapshot);
    render(snapshot);
  } catch (error) {
    setStatus("server-down", "dashboard away");
    banner("server-down", `The dashboard server does not answer (${error.message}); retrying.`);
  } finally {
    setTimeout(tick, state.interval);
  }
}

async function absorb(snapshot) {
  state.interval = Math.max(200, Math.round((snapshot.interval || 1) * 1000));
  state.actions = !!snapshot.actions;
  if (snapshot.seq > state.seq) {
    const point = snapshot.point;
    if (point && point.seq === state.seq + 1) {
      state.points.push(point);
    } else {
      const history = await getJSON(`/api/history?after=${state.seq}`);
      state.points.push(...history.points);
    }
    state.seq = snapshot.seq;
  } else if (snapshot.seq < state.seq) {  // the server restarted: start over
    state.points = (await getJSON("/api/history")).points;
    state.seq = snapshot.seq;
  }
  const newest = state.points.length ? state.points[state.points.length - 1].t : 0;
  state.points = state.points.filter((p) => p.t >= newest - WINDOW_MS);
}

function render(snapshot) {
  $("environment").textContent = snapshot.environment;
  $("where").textContent = snapshot.redis.where;
  const mode = $("mode");
  mode.dataset.mode = snapshot.actions ? "actions" : "read-only";
  mode.textContent = snapshot.actions ? "actions on" : "read-only";
  $("token-box").hidden = !(snapshot.actions && !state.token);
  const redis = snapshot.redis;
  if (redis.up) {
    setStatus("live", `live · ${clock(snapshot.read_at)}`);
    banner(null, null);
  } else {
    setStatus("redis-down", "Redis away");
    const since = redis.down_since ? `since ${clock(redis.down_since)}` : "";
    const figures = snapshot.read_at ? ` Figures below are from ${clock(snapshot.read_at)}.` : "";
    banner("redis-down", `Redis unreachable ${since}: ${redis.error || "no answer"}. Retrying every ${snapshot.interval} s.${figures}`);
  }
  state.streams = snapshot.streams;
  renderStreams(snapshot.streams);
  renderGroups(snapshot.streams);
  renderConsumers(snapshot.streams);
  renderCheckpoints(snapshot.projections, snapshot.archives);
  renderCharts();
  renderSelect(snapshot.streams);
  if (redis.up) refreshLetters(snapshot.streams);
}

function series(pick) {
  return state.points.map((p) => [p.t, pick(p)]);
}

function sum(values) {
  let total = null;
  for (const value of values) if (value !== null && value !== undefined) total = (total || 0) + value;
  return total;
}

function groupValues(point, field) {
  const found = [];
  for (const groups of Object.values(point.groups)) {
    for (const group of Object.values(groups)) found.push(group[field]);
  }
  return found;
}

function renderStreams(streams) {
  const body = $("streams").tBodies[0];
  body.replaceChildren(...streams.map((s) => {
    const trend = sparkline(state.points.slice(-120).map((p) => (p.streams[s.uri] || {}).rate ?? null));
    const dead = cell(count(s.dead_letters), s.dead_letters ? "num warn" : "num", "dead_letters");
    const row = el("tr", { "data-stream": s.uri, class: s.uri === state.selected ? "selected" : "" },
      cell(s.uri, "", "uri"), cell(count(s.length), "num", "length"), cell(rate(s.rate), "num", "rate"),
      el("td", {}, trend), cell(size(s.memory_bytes), "num", "memory"), dead,
      cell(String(s.groups.length), "num", "groups"),
      cell(s.last_id ? `${s.last_id} (${clock(s.last_time)})` : "-", "id", "last"));
    row.firstChild.addEventListener("click", () => select(s.uri));
    return row;
  }));
  $("no-streams").hidden = streams.length > 0;
}

function renderGroups(streams) {
  const rows = [];
  for (const s of streams) {
    for (const g of s.groups) {
      const trend = sparkline(state.points.slice(-120).map((p) => ((p.groups[s.uri] || {})[g.name] || {}).lag ?? null));
      const oldest = g.oldest_pending_id === null ? "-" : duration(g.oldest_pending_age_ms);
      rows.push(el("tr", { "data-stream": s.uri, "data-group": g.name },
        cell(s.uri, "", "uri"), cell(g.name, "", "group"), cell(String(g.consumers.length), "num", "consumers"),
        cell(count(g.lag), g.lag ? "num warn" : "num", "lag"), el("td", {}, trend),
        cell(String(g.pending), "num", "pending"),
        el("td", { class: "num", "data-field": "oldest", title: g.oldest_pending_id ? `${g.oldest_pending_id} held by ${g.oldest_pending_consumer}, delivered ${duration(g.oldest_pending_idle_ms)} ago` : "" }, oldest),
        cell(rate(g.rate), "num", "rate"), cell(g.last_delivered_id, "id", "last_delivered")));
      rows[rows.length - 1].firstChild.addEventListener("click", () => select(s.uri));
    }
  }
  $("groups").tBodies[0].replaceChildren(...rows);
}

function renderConsumers(streams) {
  const rows = [];
  for (const s of streams) {
    for (const g of s.groups) {
      for (const c of g.consumers) {
        rows.push(el("tr", { "data-consumer": `${s.uri}/${g.name}/${c.name}` },
          cell(s.uri), cell(g.name), cell(c.name), cell(String(c.pending), "num", "pending"),
          cell(duration(c.idle_ms), "num", "idle")));
      }
    }
  }
  $("consumers").tBodies[0].replaceChildren(...rows);
}

function renderCheckpoints(projections, archives) {
  const rows = [];
  for (const p of projections) {
    const lag = p.lag === null ? "?" : `${p.lag}${p.lag_exact ? "" : "+"}`;
    const problem = p.error || (p.broken ? `broken: ${p.broken}` : p.ahead ? "checkpoint ahead of the stream" : "");
    rows.push(el("tr", { "data-projection": `${p.uri}/${p.name}` },
      cell("projection"), cell(p.uri), cell(p.name), cell(p.checkpoint || "(beginning)", "id", "checkpoint"),
      cell(lag, p.lag ? "num warn" : "num", "lag"), cell(`${count(p.applied)} applied`, "num", "applied"),
      cell(problem || "ok", problem ? "warn" : "", "state")));
  }
  for (const a of archives) {
    rows.push(el("tr", { "data-archive": `${a.uri}/${a.group}` },
      cell("archive"), cell(a.uri), cell(a.group), cell(a.last_delivered_id, "id", "checkpoint"),
      cell(count(a.behind), a.behind ? "num warn" : "num", "lag"), cell(`${a.pending} in flight`, "num", "applied"),
      cell("ok", "", "state")));
  }
  $("checkpoints").tBodies[0].replaceChildren(...rows);
  $("no-checkpoints").hidden = rows.length > 0;
}

// --- charts ----------------------------------------------------------------------

function renderCharts() {
  const options = {
    now: state.points.length ? state.points[state.points.length - 1].t : Date.now(),
    windowMs: WINDOW_MS,
    gapMs: Math.max(3 * state.interval, 5000),
    format: rate,
  };
  drawChart($("chart-rate"), $("legend-rate"), options, [
    { name: "appended", color: "#2f6fde", values: smooth(series((p) => sum(Object.values(p.streams).map((s) => s.rate)))) },
    { name: "delivered to groups", color: "#e07b24", values: smooth(series((p) => sum(groupValues(p, "rate")))) },
  ]);
  drawChart($("chart-lag"), $("legend-lag"), options, [
    { name: "lag", color: "#c7372f", values: series((p) => sum(groupValues(p, "lag"))) },
    { name: "pending", color: "#6b7385", values: series((p) => sum(groupValues(p, "pending"))) },
  ]);
}

// --- the token ----------------------------------------------------------------------

function takeTokenFromAddress() {
  // The address printed at start carries the token after '#': the browser never
  // sends that part to a server. Keep it for this tab and take it off the address.
  const match = location.hash.match(/^#token=(.+)$/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function forgetToken() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-box").hidden = !state.actions;
}

function start() {
  takeTokenFromAddress();
  $("token-save").addEventListener("click", () => {
    const value = $("token").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("token-box").hidden = true;
  });
  $("stream-select").addEventListener("change", (e) => select(e.target.value));
  $("tail-pause").addEventListener("click", () => {
    state.tail.paused = !state.tail.paused;
    $("tail-pause").textContent = state.tail.paused ? "resume" : "pause";
  });
  tick();
  tailTick();
}

document.addEventListener("DOMContentLoaded", start);
