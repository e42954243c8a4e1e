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
function renderConnector(c, meterDown) {
  const tx = c.transaction;
  const m = c.meter || {};
  const link = c.controller_link || {};
  const rows = [
    ["Vehicle", c.pilot === "A" ? "not plugged in" : c.pilot ? `plugged in (pilot ${c.pilot})` : "unknown"],
    ["ESP32", link.up ? `up${link.firmware ? " · fw " + link.firmware : ""}` : `DOWN · ${link.reason || ""}`],
    ["Limit", `${c.limit_a} A` + (c.limits && c.limits.local !== undefined ? " (local limit)" : "")],
  ];
  if (c.error_code && c.error_code !== "NoError") rows.push(["Error", `${c.error_code} ${c.info || ""}`]);
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

function renderProblems(problems, daemonDown) {
  const list = $("problems");
  list.replaceChildren();
  if (daemonDown) list.append(el("li", { class: "error" }, `Station daemon unreachable: ${daemonDown}`));
  for (const p of problems || []) list.append(el("li", { class: p.severity, "data-code": p.code }, p.message));
  if (!list.children.length) list.append(el("li", { class: "none" }, "No problems detected"));
}

function render(s) {
  setText("station", s.station_id || "Charge point");
  setText("version", `software ${s.software_version || "?"}`);
  const meterDown = (s.meter_health || {}).healthy === false;
  $("connectors").replaceChildren(...(s.connectors || []).map((c) => renderConnector(c, meterDown)));
  const o = s.ocpp || {};
  setText("csms-state", o.connected ? "connected" : "NOT connected");
  $("csms-state").className = o.connected ? "" : "bad";
  setText("csms-version", o.version === "201" ? "2.0.1" : o.version === "16" ? "1.6J" : o.version);
  setText("csms-url", o.url);
  setText("csms-sent", ago(o.last_sent_at));
  setText("csms-received", ago(o.last_received_at));
  setText("csms-reconnects", o.reconnects);
  setText("csms-error", o.last_error || "none");
  const esp = $("esp32");
  esp.replaceChildren();
  for (const c of s.connectors || []) {
    const info = (s.esp32 || {})[String(c.id)] || {};
    const stats = info.stats || {};
    const up = c.controller_link && c.controller_link.up;
    esp.append(el("dt", {}, `Connector ${c.id}`),
      el("dd", {}, `${up ? "up" : "DOWN"}${info.firmware ? " · fw " + info.firmware : ""}` +
        (stats.frames_rejected != null ? ` · ${stats.frames_rejected} bad frames` : "")));
  }
  const parked = o.parked_messages || 0;
  setText("queue", (s.outbox_depth === 0 ? "empty" : `${s.outbox_depth} message(s) waiting for the CSMS`) +
    (parked ? ` · ${parked} parked` : ""));
  const clock = s.clock || {};
  setText("clock", clock.trusted ? `synchronized (${clock.source || "?"})` : "NOT synchronized");
  setText("store", s.store && s.store.healthy === false ? `FAILING: ${s.store.last_error}` : "ok");
  setText("uptime", s.uptime_s != null ? `${Math.round(s.uptime_s / 60)} min` : "–");
  renderProblems(s.problems, null);
}

function describe(e) {
  const d = e.data || {};
  switch (e.kind) {
    case "connector": return `connector ${d.connector_id}: ${d.connector && d.connector.status}`;
    case "transaction": return `transaction ${d.event} on connector ${d.transaction && d.transaction.connector_id}` +
      ` (${d.trigger})`;
    case "csms": return d.connected ? `CSMS connected (OCPP ${d.version})` : `CSMS disconnected: ${d.last_error || ""}`;
    case "controller_link": return `ESP32 link ${d.up ? "up" : "down"} on connector ${d.connector_id}: ${d.reason}`;
    case "meter_health": return d.healthy ? "energy meter answers again" : `energy meter not answering: ${d.reason || ""}`;
    case "reservation": return `reservation ${d.reservation_id} ${d.status.toLowerCase()}` +
      (d.connector_id != null ? ` on connector ${d.connector_id}` : " (any connector)");
    case "outbox": return d.depth ? `offline queue: ${d.depth} message(s) waiting for the CSMS` : "offline queue empty";
    case "daemon": return d.reachable ? "station daemon reachable" : `station daemon unreachable: ${d.error || ""}`;
    default: return `${e.kind} ${JSON.stringify(d).slice(0, 120)}`;
  }
}

let daemonShown;  // reachability of the daemon as the list last showed it (undefined: not yet)
let queueWasEmpty = true;  // the offline queue fills and drains with every message: list only the changes

function addEvent(e) {
  if (e.kind === "meter") return;  // every second: shown on the connector, not in the list
  // Periodic and clock-aligned meter values come every few seconds during a session: they would push
  // the starts, stops and faults a technician looks for out of the list.
  if (e.kind === "transaction" && e.data && e.data.event === "updated" &&
      ["MeterValuePeriodic", "MeterValueClock"].includes(e.data.trigger)) return;
  if (e.kind === "outbox") {
    const empty = !(e.data && e.data.depth);
    if (empty === queueWasEmpty) return;
    queueWasEmpty = empty;
  }
  if (e.kind === "daemon") {
    const known = daemonShown;
    daemonShown = e.data.reachable;
    // The stream's opening state is news only when it differs from what the list shows: the
    // daemon may have gone away between loading the page and opening the stream.
    if (e.data.initial && (known === e.data.reachable || (known === undefined && e.data.reachable))) return;
  }
  const list = $("events");
  list.prepend(el("li", { "data-kind": e.kind }, el("time", {}, time(e.at)), el("span", {}, describe(e))));
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
  source.onopen = () => scheduleRefresh();
}

async function start() {
  try {
    const recent = await (await fetch("/events/recent", { cache: "no-store" })).json();
    for (const e of recent) addEvent(e);
  } catch { /* the live stream fills the list */ }
  await refresh();
  connect();
  setInterval(refresh, 15000);  // relative times ("12 s ago") and anything an event did not cover
}

start();
