// Technician status page: /status for the picture, /events (SSE) to keep it live. No build step.
"use strict";

const KINDS = ["daemon", "connector", "transaction", "meter", "meter_health", "csms", "outbox", "controller_link",
               "reservation", "ipc_events_dropped"];
const REFRESH_ON = new Set(["daemon", "connector", "transaction", "csms", "outbox", "controller_link", "reservation",
                            "meter_health"]);
const MAX_EVENTS = 40;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? "–"));
  return node;
}

function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false });
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso)) / 1000);
  if (isNaN(s)) return iso;
  if (s < 90) return `${Math.max(s, 0)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function statusClass(status) {
  if (["Available", "Charging"].includes(status)) return "ok";
  if (["Faulted", "Unavailable"].includes(status)) return "bad";
  return "warn";
}

function setText(id, text) { $(id).textContent = text ?? "–"; }

function dl(rows) {
  const list = el("dl");
  for (const [k, v] of rows) list.append(el("dt", {}, k), el("dd", {}, v));
  return list;
}

// --- rendering ----------------------------------------------------------------------------
function vehicle(c) {
  const link = c.controller_link || {};
  if (!link.up || !c.pilot) return "unknown (no status from the charge controller)";
  if (c.pilot === "A") return "not plugged in";
  if (c.pilot === "E" || c.pilot === "F") return `unknown: pilot signal fault (state ${c.pilot})`;
  return c.pilot === "B" ? "plugged in" : "plugged in, asking for energy";
}

// The problem (from /status) about connector `id`, without its "connector N: " prefix.
function connectorProblem(problems, id) {
  const prefix = `connector ${id}: `;
  const p = (problems || []).find((q) => ["connector_faulted", "esp32_link_down"].includes(q.code) &&
                                         (q.what || "").startsWith(prefix));
  return p ? p.what.slice(prefix.length) : null;
}

function renderConnector(c, meterDown, problems) {
  const tx = c.transaction;
  const m = c.meter || {};
  const link = c.controller_link || {};
  const rows = [
    ["Vehicle", vehicle(c)],
    ["ESP32", link.up ? `answers${link.firmware ? " · fw " + link.firmware : ""}` : "NOT answering (see the problem above)"],
    ["Limit", `${c.limit_a} A` + (c.limits && c.limits.local !== undefined ? " (local limit)" : "")],
  ];
  const fault = connectorProblem(problems, c.id);
  if (fault) rows.push(["Fault", fault]);
  if (!c.operative) rows.push(["Availability", "out of service"]);
  if (c.pending_authorization) rows.push(["Session", "authorized, waiting for the vehicle"]);
  if (c.reservation) rows.push(["Reserved", `for token ${c.reservation.id_token} until ${time(c.reservation.expires_at)}` +
    ` (reservation ${c.reservation.id}${c.reservation.connector_id == null ? ", any connector" : ""})`]);
  if (tx) {
    rows.push(["Session", `since ${time(tx.started_at)} · token ${tx.id_token || "–"}`]);
    const start = tx.meter_start_wh;
    if (start != null && m.energy_wh != null) rows.push(["Energy", `${((m.energy_wh - start) / 1000).toFixed(2)} kWh`]);
  }
  if (m.power_w != null) rows.push(["Power", `${(m.power_w / 1000).toFixed(2)} kW`]);
  if (m.voltage_v) rows.push(["Voltage", m.voltage_v.map((v) => `${Math.round(v)} V`).join(" / ")]);
  // A dead meter leaves its last reading in place: say so rather than show it as live.
  if (meterDown && (m.power_w != null || m.energy_wh != null)) rows.push(["Meter", "not answering: last reading shown"]);
  return el("section", { "data-testid": `connector-${c.id}` },
    el("div", { class: "connector-head" },
      el("h2", {}, `Connector ${c.id}`),
      el("span", { class: `badge big ${statusClass(c.status)}`, "data-testid": `connector-${c.id}-status` }, c.status)),
    dl(rows));
}

function problemItem(p) {
  if (!p.what) return el("li", { class: p.severity, "data-code": p.code }, p.message);
  const head = p.what.charAt(0).toUpperCase() + p.what.slice(1);
  const detail = [p.where, p.since ? `since ${p.since}` : null].filter(Boolean).join(" · ");
  return el("li", { class: p.severity, "data-code": p.code },
    el("div", {}, head),
    ...(detail ? [el("div", { class: "where" }, detail)] : []),
    el("div", { class: "check" }, `First check: ${p.check}`));
}

function renderProblems(problems, daemonDown) {
  const list = $("problems");
  list.replaceChildren();
  if (daemonDown) {
    // "station daemon not reachable: <reason>; since <time>. First check: <what>"
    const [reason, check] = daemonDown.replace(/^station daemon not reachable: /, "").split(". First check: ");
    list.append(problemItem({ code: "daemon_unreachable", severity: "error",
      what: "Station daemon unreachable: the station is not running its software (no charging, no CSMS)",
      where: reason, check: check || "systemctl status station" }));
  }
  for (const p of problems || []) list.append(problemItem(p));
  if (!list.children.length) list.append(el("li", { class: "none" }, "No problems detected"));
}

function render(s) {
  setText("station", s.station_id || "Charge point");
  setText("version", `software ${s.software_version || "?"}`);
  const meterDown = (s.meter_health || {}).healthy === false;
  $("connectors").replaceChildren(...(s.connectors || []).map((c) => renderConnector(c, meterDown, s.problems)));
  const o = s.ocpp || {};
  setText("csms-state", o.connected ? "connected" : "NOT connected");
  $("csms-state").className = o.connected ? "" : "bad";
  setText("csms-version", o.version === "201" ? "2.0.1" : o.version === "16" ? "1.6J" : o.version);
  setText("csms-url", o.url);
  setText("csms-sent", ago(o.last_sent_at));
  setText("csms-received", ago(o.last_received_at));
  setText("csms-reconnects", o.reconnects);
  const csmsProblem = (s.problems || []).find((p) => p.code === "csms_unreachable");
  setText("csms-error", csmsProblem ? csmsProblem.what : "none");
  const esp = $("esp32");
  esp.replaceChildren();
  for (const c of s.connectors || []) {
    const info = (s.esp32 || {})[String(c.id)] || {};
    const stats = info.stats || {};
    const up = c.controller_link && c.controller_link.up;
    esp.append(el("dt", {}, `Connector ${c.id}`),
      el("dd", {}, `${up ? "answers" : "NOT answering"}${info.port ? " on " + info.port : ""}${info.firmware ? " · fw " + info.firmware : ""}` +
        (stats.frames_rejected != null ? ` · ${stats.frames_rejected} bad frames` : "")));
  }
  const parked = o.parked_messages || 0;
  setText("queue", (s.outbox_depth === 0 ? "empty" : `${s.outbox_depth} message(s) waiting for the CSMS`) +
    (parked ? ` · ${parked} parked` : ""));
  const clock = s.clock || {};
  setText("clock", clock.trusted ? `synchronized (${clock.source || "?"})` : "NOT synchronized");
  setText("store", s.store && s.store.healthy === false ? "FAILING: cannot write (see the problem above)" : "ok");
  setText("uptime", s.uptime_s != null ? `${Math.round(s.uptime_s / 60)} min` : "–");
  renderProblems(s.problems, null);
}

let daemonShown;  // reachability of the daemon as the list last showed it (undefined: not yet)

const listed = new Set();  // events already in the list (the recent list and the stream overlap)

function addEvent(e) {
  // The API words each happening once (api/narration.py); bookkeeping and repeats carry no text.
  if (!e.text) return;
  if (!e.data || !e.data.initial) {
    const key = `${e.at}|${e.kind}|${e.text}`;
    if (listed.has(key)) return;
    listed.add(key);
  }
  if (e.kind === "daemon") {
    const known = daemonShown;
    daemonShown = e.data.reachable;
    // The stream's opening state is news only when it differs from what the list shows: the
    // daemon may have gone away between loading the page and opening the stream.
    if (e.data.initial && (known === e.data.reachable || (known === undefined && e.data.reachable))) return;
  }
  const list = $("events");
  list.prepend(el("li", { "data-kind": e.kind }, el("time", {}, time(e.at)), el("span", {}, e.text)));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

// --- data flow ------------------------------------------------------------------------------
let refreshTimer = null;
let daemonError = null;

async function refresh() {
  refreshTimer = null;
  try {
    const r = await fetch("/status", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    daemonError = null;
    setDaemon(true);
    render(body);
  } catch (err) {
    daemonError = String(err.message || err);
    setDaemon(false);
    renderProblems([], daemonError);
  }
}

function scheduleRefresh() {
  if (!refreshTimer) refreshTimer = setTimeout(refresh, 250);
}

function setDaemon(up, detail) {
  $("daemon-dot").className = `dot ${up ? "ok" : "bad"}`;
  setText("daemon", up ? "live" : `daemon unreachable${detail ? ": " + detail : ""}`);
}

function updateMeter(e) {
  // Cheap live update of power without refetching: the next refresh redraws everything.
  if (e.data && e.data.meter) scheduleRefreshSoon();
}

let meterTimer = null;
function scheduleRefreshSoon() {
  if (!meterTimer) meterTimer = setTimeout(() => { meterTimer = null; scheduleRefresh(); }, 2000);
}

function connect() {
  const source = new EventSource("/events");
  const onEvent = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch { return; }
    addEvent(e);
    if (e.kind === "meter") updateMeter(e);
    else if (REFRESH_ON.has(e.kind)) scheduleRefresh();
  };
  for (const kind of KINDS) source.addEventListener(kind, onEvent);
  source.onmessage = onEvent;
  source.onerror = () => setDaemon(false, "API connection lost, retrying");
  // Whatever happened between loading the list and the stream opening (or while it was down) is in
  // the API's recent list: take it again; rows already shown are skipped.
  source.onopen = () => { loadRecent(); scheduleRefresh(); };
}

async function loadRecent() {
  try {
    const recent = await (await fetch("/events/recent", { cache: "no-store" })).json();
    for (const e of recent) addEvent(e);
  } catch { /* the live stream fills the list */ }
}

async function start() {
  await loadRecent();
  await refresh();
  connect();
  setInterval(refresh, 15000);  // relative times ("12 s ago") and anything an event did not cover
}

start();
