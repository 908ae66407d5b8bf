// The edgepm dashboard: a client of /api/v1 (docs/api.md), nothing more. No framework: the page
// is a handful of tables, one uPlot chart and an SVG map per site, redrawn from the API's answers
// and kept current by /api/v1/events.
"use strict";

const state = {
  token: sessionStorage.getItem("edgepm-token") || "",
  devices: [],      // /api/v1/devices
  alerts: [],       // /api/v1/alerts
  chart: null,      // the uPlot instance
  chartKey: "",     // "tenant/device" on the chart
  events: 0,        // events received (shown in the status line)
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const pct = (p) => (100 * p).toFixed(1) + " %";
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
const key = (d) => d.tenant + "/" + d.device;
function risk(p) { return p == null ? "unknown" : p >= 0.8 ? "high" : p >= 0.5 ? "elevated" : "low"; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401 || r.status === 403) {
    document.getElementById("token-form").hidden = false;
    const body = await r.json().catch(() => ({}));
    throw new Error(body.error || ("HTTP " + r.status));
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function status(text) { document.getElementById("status").textContent = text; }

// ---------------------------------------------------------------- views

function drawTop5() {
  const body = document.querySelector("#top5 tbody");
  body.replaceChildren();
  const ranked = state.devices.filter((d) => d.latest).sort((a, b) => b.latest.probability - a.latest.probability);
  for (const d of ranked.slice(0, 5)) {
    const why = el("ul", { class: "contributions" });
    const top = [...(d.contributions || [])].sort((a, b) => Math.abs(b.value) - Math.abs(a.value)).slice(0, 4);
    for (const c of top) why.append(el("li", { class: c.value >= 0 ? "up" : "down" }, c.feature + " " + (c.value >= 0 ? "+" : "") + c.value.toFixed(3)));
    if (!top.length) why.append(el("li", { class: "none" }, "not explained (model-score explains scores above the threshold unless explain = \"always\")"));
    body.append(el("tr", { class: "device risk-" + risk(d.latest.probability), "data-device": key(d), "data-ts": d.latest.ts_ms },
      el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); chartDevice(key(d)); } }, d.device), el("div", { class: "sub" }, d.tenant)),
      el("td", { class: "probability" }, pct(d.latest.probability)),
      el("td", {}, why)));
  }
}

function drawMap() {
  const root = document.getElementById("map-sites");
  root.replaceChildren();
  const bySite = new Map();
  for (const d of state.devices) {
    const site = d.asset.site || "(no site)";
    if (!bySite.has(site)) bySite.set(site, []);
    bySite.get(site).push(d);
  }
  const ns = "http://www.w3.org/2000/svg";
  for (const [site, devices] of [...bySite.entries()].sort()) {
    const placed = devices.filter((d) => isFinite(parseFloat(d.asset.lat)) && isFinite(parseFloat(d.asset.lon)));
    const lats = placed.map((d) => parseFloat(d.asset.lat)), lons = placed.map((d) => parseFloat(d.asset.lon));
    const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 220 160");
    svg.setAttribute("class", "site-map");
    devices.forEach((d, i) => {
      // Positioned by latitude/longitude within the site; devices without them in a row below.
      let x = 20 + (i % 9) * 22, y = 150;
      if (placed.includes(d)) {
        x = 20 + (lo1 > lo0 ? (parseFloat(d.asset.lon) - lo0) / (lo1 - lo0) : 0.5) * 180;
        y = 120 - (la1 > la0 ? (parseFloat(d.asset.lat) - la0) / (la1 - la0) : 0.5) * 100;
      }
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", x.toFixed(1)); c.setAttribute("cy", y.toFixed(1)); c.setAttribute("r", "7");
      c.setAttribute("class", "marker risk-" + risk(d.latest && d.latest.probability));
      c.setAttribute("data-device", key(d));
      c.addEventListener("click", () => chartDevice(key(d)));
      const t = document.createElementNS(ns, "title");
      t.textContent = d.device + (d.asset.position ? " · " + d.asset.position : "") + (d.latest ? " · " + pct(d.latest.probability) : "");
      c.append(t);
      svg.append(c);
    });
    root.append(el("figure", {}, svg, el("figcaption", {}, site + " (" + devices.length + ")")));
  }
}

function drawAges() {
  const now = Date.now(), year = 365.25 * 86400000;
  const bands = [["under 3 years", 0, 3], ["3 to 6 years", 3, 6], ["6 years or more", 6, Infinity], ["unknown", -1, -1]];
  const rows = bands.map(([label]) => ({ label, n: 0, sum: 0, failing: 0, scored: 0 }));
  for (const d of state.devices) {
    const installed = Date.parse(d.asset.install_date || "");
    const age = isFinite(installed) ? (now - installed) / year : -1;
    const i = age < 0 ? 3 : bands.findIndex(([, lo, hi]) => age >= lo && age < hi);
    const r = rows[i];
    r.n += 1;
    if (d.latest) { r.scored += 1; r.sum += d.latest.probability; r.failing += d.latest.is_failure ? 1 : 0; }
  }
  const body = document.querySelector("#age-bands tbody");
  body.replaceChildren();
  for (const r of rows.filter((r) => r.n > 0)) {
    const mean = r.scored ? r.sum / r.scored : null;
    const bar = el("div", { class: "bar risk-" + risk(mean) });
    bar.style.width = mean == null ? "0" : (100 * mean).toFixed(1) + "%";
    body.append(el("tr", { class: "age-band" }, el("td", {}, r.label), el("td", {}, r.n),
      el("td", {}, el("div", { class: "bar-track" }, bar), mean == null ? "–" : pct(mean)), el("td", {}, r.failing)));
  }
}

function drawAlerts() {
  const body = document.querySelector("#alert-list tbody");
  body.replaceChildren();
  for (const a of state.alerts.slice(0, 20)) {
    let ack;
    if (a.acknowledged) {
      ack = el("span", { class: "acknowledged" }, "by " + a.acknowledged.by + ", " + when(a.acknowledged.at_ms) + (a.acknowledged.note ? " — " + a.acknowledged.note : ""));
    } else {
      const by = el("input", { class: "ack-by", placeholder: "your name", size: 12 });
      const note = el("input", { class: "ack-note", placeholder: "note", size: 16 });
      const button = el("button", { class: "ack", type: "button" }, "Acknowledge");
      button.addEventListener("click", async () => {
        try {
          await api("/api/v1/alerts/" + a.id + "/ack", { method: "POST", body: JSON.stringify({ by: by.value, note: note.value }), headers: { "Content-Type": "application/json" } });
          await loadAlerts();
        } catch (e) { status("acknowledging failed: " + e.message); }
      });
      ack = el("span", {}, by, note, button);
    }
    body.append(el("tr", { class: "alert severity-" + a.severity, "data-id": a.id },
      el("td", {}, when(a.ts_ms)), el("td", {}, a.device, el("div", { class: "sub" }, a.tenant)),
      el("td", {}, el("details", {}, el("summary", {}, a.subject), el("pre", {}, a.body))), el("td", {}, ack)));
  }
}

function drawDegradation(answer) {
  const body = document.querySelector("#degradation-list tbody");
  body.replaceChildren();
  for (const t of answer.degrading) {
    body.append(el("tr", { class: "degrading" }, el("td", {}, t.device, el("div", { class: "sub" }, t.tenant)),
      el("td", {}, t.baseline.toFixed(3)), el("td", {}, t.recent.toFixed(3)), el("td", {}, "+" + t.rise_percent.toFixed(1) + " %")));
  }
  if (!answer.degrading.length) body.append(el("tr", {}, el("td", { colSpan: 4, class: "sub" }, "none of " + answer.judged.length + " judged")));
}

function drawVersions(answer) {
  const body = document.querySelector("#version-list tbody");
  body.replaceChildren();
  for (const t of answer.tenants) {
    const v = (s) => el("td", { title: t.plugins[s].source }, el("code", {}, t.plugins[s].version));
    body.append(el("tr", { class: "tenant" }, el("td", {}, t.name), el("td", {}, t.model), v("preprocess"), v("score"), v("policy")));
  }
}

// ---------------------------------------------------------------- the chart

async function drawChart() {
  const k = document.getElementById("device-select").value;
  if (!k) return;
  state.chartKey = k;
  const range = parseInt(document.getElementById("range-select").value, 10);
  const to = Date.now(), from = to - range;
  const [tenant, device] = k.split("/");
  const [series, alerts] = await Promise.all([
    api(`/api/v1/devices/${tenant}/${device}/predictions?from=${from}&to=${to}&max_points=600`),
    api(`/api/v1/alerts?tenant=${tenant}&device=${device}&from=${from}&to=${to}&limit=1000`),
  ]);
  const points = series.series.points;
  // One x axis (seconds) for the curve and the alerts: an alert is stamped with its window's end,
  // so it sits on its prediction unless downsampling moved that into a bucket.
  const curve = new Map(points.map((p) => [p.ts_ms, p.probability]));
  const marks = new Map(alerts.alerts.map((a) => [a.ts_ms, a.probability]));
  const times = [...new Set([...curve.keys(), ...marks.keys()])].sort((a, b) => a - b);
  const data = [
    times.map((t) => t / 1000),
    times.map((t) => (curve.has(t) ? curve.get(t) : null)),
    times.map((t) => (marks.has(t) ? marks.get(t) : null)),
  ];
  const box = document.getElementById("chart");
  const opts = {
    width: Math.max(320, box.clientWidth - 8), height: 260,
    scales: { y: { range: [0, 1] } },
    series: [{}, { label: device + " probability", stroke: "#2563eb", width: 2, spanGaps: true },
             { label: "alerts", stroke: "#dc2626", width: 0, points: { show: true, size: 9, fill: "#dc2626" } }],
    axes: [{}, { values: (u, v) => v.map((x) => (100 * x).toFixed(0) + "%") }],
  };
  if (state.chart) state.chart.destroy();
  state.chart = new uPlot(opts, data, box);
  box.setAttribute("data-points", String(points.length));
  box.setAttribute("data-alerts", String(alerts.alerts.length));
}

function chartDevice(k) {
  document.getElementById("device-select").value = k;
  drawChart().catch((e) => status("chart: " + e.message));
}

function fillDeviceSelect() {
  const select = document.getElementById("device-select");
  const current = select.value;
  const keys = state.devices.map(key);
  if (keys.join() === [...select.options].map((o) => o.value).join()) return;
  select.replaceChildren(...keys.map((k) => el("option", { value: k }, k)));
  const ranked = state.devices.filter((d) => d.latest).sort((a, b) => b.latest.probability - a.latest.probability);
  select.value = keys.includes(current) ? current : (ranked[0] ? key(ranked[0]) : keys[0] || "");
}

// ---------------------------------------------------------------- loading and live updates

async function loadDevices() { state.devices = (await api("/api/v1/devices")).devices; }
async function loadAlerts() { state.alerts = (await api("/api/v1/alerts?limit=50")).alerts; drawAlerts(); }

async function loadAll() {
  await loadDevices();
  fillDeviceSelect();
  drawTop5(); drawMap(); drawAges();
  await loadAlerts();
  drawDegradation(await api("/api/v1/degradation"));
  drawVersions(await api("/api/v1/tenants"));
  fillReportWeeks(await api("/api/v1/reports"));
  await drawChart();
  status(state.devices.length + " devices · live");
  document.body.setAttribute("data-ready", "true");
}

function fillReportWeeks(answer) {
  const select = document.getElementById("report-week");
  const chosen = select.value;
  select.replaceChildren(...answer.weeks.map((w) => el("option", { value: w.week }, w.week)));
  if (answer.weeks.some((w) => w.week === chosen)) select.value = chosen;
  document.getElementById("report-download").disabled = answer.weeks.length === 0;
}

// The PDF through fetch (a plain link could not send the token), saved from a blob.
async function downloadReport() {
  const week = document.getElementById("report-week").value;
  if (!week) return;
  status("making the report of " + week + "…");
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch("/api/v1/reports/" + encodeURIComponent(week), { headers });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error("report: " + (body.error || ("HTTP " + r.status)));
  }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: "edgepm-report-" + week + ".pdf" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status("report of " + week + " downloaded");
}

// Server-sent events through fetch (EventSource cannot send the Authorization header).
async function follow() {
  for (;;) {
    try {
      const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
      const r = await fetch("/api/v1/events", { headers });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const kind = (block.match(/^event: (.*)$/m) || [])[1];
          const data = (block.match(/^data: (.*)$/m) || [])[1];
          if (kind && data) onEvent(kind, JSON.parse(data));
        }
      }
    } catch (e) { status("live updates interrupted: " + e.message); }
    await new Promise((r) => setTimeout(r, 3000));
  }
}

let redraw = null;
function onEvent(kind, data) {
  state.events += 1;
  document.body.setAttribute("data-events", String(state.events));
  if (kind === "prediction") {
    const d = state.devices.find((x) => x.tenant === data.tenant && x.device === data.device);
    if (!d || d.latest == null || data.ts_ms >= d.latest.ts_ms) {
      // New devices and contributions come with the next read of the devices; the probability now.
      if (d) d.latest = { ts_ms: data.ts_ms, timestamp: data.timestamp, probability: data.probability, is_failure: data.is_failure, windows: 1 };
    }
    if (!d) { loadDevices().then(() => { fillDeviceSelect(); drawTop5(); drawMap(); drawAges(); }); }
  } else if (kind === "alert") {
    state.alerts.unshift(data);
    drawAlerts();
  } else if (kind === "lagged") {
    loadAll().catch((e) => status(e.message));
    return;
  }
  // Redraw at most a few times a second however many events arrive.
  if (!redraw) redraw = setTimeout(() => {
    redraw = null;
    drawTop5(); drawMap(); drawAges();
    if (kind === "prediction" && state.chartKey === data.tenant + "/" + data.device) drawChart().catch(() => {});
    status(state.devices.length + " devices · live · " + state.events + " updates");
  }, 300);
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = document.getElementById("token-input").value;
  sessionStorage.setItem("edgepm-token", state.token);
  document.getElementById("token-form").hidden = true;
  start();
});
document.getElementById("device-select").addEventListener("change", () => drawChart().catch((e) => status(e.message)));
document.getElementById("report-download").addEventListener("click", () => downloadReport().catch((e) => status(e.message)));
document.getElementById("range-select").addEventListener("change", () => drawChart().catch((e) => status(e.message)));

let following = false;
function start() {
  loadAll().then(() => { if (!following) { following = true; follow(); } }).catch((e) => status(e.message));
}
start();
