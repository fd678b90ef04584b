// vrata fleet dashboard: polls /admin/status and /admin/fleet and draws plain DOM and SVG.
// Self-contained (no libraries, no CDN). Only textContent is ever set from data, never markup.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace: a name, never fetched

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const fmt = (n, digits = 0) => (n === null || n === undefined || Number.isNaN(n)) ? "–" :
  Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const pct = (part, whole) => whole > 0 ? fmt(100 * part / whole, 1) + "%" : "–";
const ago = (unix) => {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};

// A small time-series chart: requests/s per slot (area) and errors/s (red line).
function spark(series, step, slots, now, width, height) {
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const start = now - now % step - (slots - 1) * step;
  const byT = new Map(series.map(p => [p.t, p]));
  const pts = [];
  for (let i = 0; i < slots; i++) {
    const p = byT.get(start + i * step);
    pts.push({ r: p ? p.requests / step : 0, e: p ? (p.status_5xx + p.status_4xx) / step : 0 });
  }
  const max = Math.max(1e-9, ...pts.map(p => p.r));
  const x = i => (i / (slots - 1)) * (width - 2) + 1;
  const y = v => height - 2 - (v / max) * (height - 4);
  const line = pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.r).toFixed(1)}`).join("");
  svg.append(svgEl("path", { class: "area", d: `${line}L${x(slots - 1)},${height}L${x(0)},${height}Z` }));
  svg.append(svgEl("path", { class: "line", d: line }));
  if (pts.some(p => p.e > 0)) {
    svg.append(svgEl("path", { class: "err", d: pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.e).toFixed(1)}`).join("") }));
  }
  const title = svgEl("title", {});
  title.textContent = `peak ${fmt(max, 1)} req/s`;
  svg.append(title);
  return svg;
}

function card(k, v, cls) {
  return el("div", { class: "card" }, el("div", { class: "v " + (cls || "") }, v), el("div", { class: "k" }, k));
}

function renderStatus(st) {
  const cfg = document.getElementById("config");
  cfg.textContent = st.current ? `config ${st.current.version} · generation ${st.current.generation}` : "no valid config";
  cfg.className = "pill " + (st.current ? "" : "bad");
  const box = document.getElementById("error-box");
  box.hidden = !st.last_error;
  document.getElementById("errors").textContent = st.last_error ? st.last_error.problems.join("\n") : "";
  const nacks = document.querySelector("#nacks tbody");
  nacks.replaceChildren(...st.recent_nacks.slice().reverse().map(n =>
    el("tr", {}, el("td", {}, ago(n.at)), el("td", {}, n.node), el("td", {}, n.type), el("td", {}, n.version), el("td", { class: "msg" }, n.message))));
  document.getElementById("nack-box").hidden = st.recent_nacks.length === 0;
}

function renderNodes(st, fleet) {
  const stats = new Map(fleet.nodes.map(n => [n.node_id, n]));
  const rows = [];
  const seen = new Set();
  for (const n of st.nodes) {
    seen.add(n.node_id);
    const types = Object.entries(n.types);
    const acked = [...new Set(types.map(([, t]) => t.acked_version).filter(Boolean))];
    const inSync = types.length > 0 && types.every(([, t]) => t.sent_version && t.sent_version === t.acked_version);
    const nack = types.map(([k, t]) => t.last_nack ? `${k}: ${t.last_nack.message}` : null).filter(Boolean).join("; ");
    const s = stats.get(n.node_id);
    rows.push(nodeRow(n.node_id, n.agent || (s && s.agent) || "", `${n.protocol} · ${n.cluster}`, acked.join(", ") || "–", inSync, nack, s, fleet));
  }
  // Nodes that stream stats but have no ADS stream (yet).
  for (const s of fleet.nodes) if (!seen.has(s.node_id)) rows.push(nodeRow(s.node_id, s.agent, "–", "–", false, "", s, fleet));
  document.querySelector("#nodes tbody").replaceChildren(...rows);
}

function nodeRow(id, agent, ads, acked, inSync, nack, s, fleet) {
  return el("tr", { "data-node": id },
    el("td", {}, id),
    el("td", { class: "agent" }, agent || "–"),
    el("td", {}, ads),
    el("td", {}, acked),
    el("td", { class: inSync ? "ok" : "bad" }, inSync ? "yes" : "no"),
    el("td", { class: "msg bad" }, nack),
    el("td", { class: s && s.streaming ? "ok" : "warn" }, s ? (s.streaming ? `streaming · ${ago(s.last_report)}` : `stopped · ${ago(s.last_report)}`) : "none"),
    el("td", { class: "num requests-total" }, s ? fmt(s.requests_total) : "–"),
    el("td", { class: "num" }, s ? fmt(s.requests_per_second, 1) : "–"),
    el("td", {}, s ? spark(s.series, fleet.step_seconds, fleet.slots, fleet.now, 120, 24) : ""));
}

function renderEntities(id, kind, fleet) {
  const list = fleet.entities.filter(e => e.kind === kind).sort((a, b) => b.totals.requests - a.totals.requests);
  const head = el("tr", {}, ...["name", "req/s", "requests", "p50 ms", "p99 ms", "4xx", "5xx", "authz denied", "rate limited", "last 5 min"].map((h, i) =>
    el("th", { class: i >= 1 && i <= 8 ? "num" : "" }, h)));
  const rows = list.map(e => el("tr", { "data-name": e.name },
    el("td", {}, e.name),
    el("td", { class: "num" }, fmt(e.requests_per_second, 1)),
    el("td", { class: "num requests-total" }, fmt(e.totals.requests)),
    el("td", { class: "num" }, kind === "route" ? "–" : fmt(e.p50_ms, 1)),
    el("td", { class: "num" }, kind === "route" ? "–" : fmt(e.p99_ms, 1)),
    el("td", { class: "num " + (e.totals.status_4xx > 0 ? "warn" : "") }, kind === "route" ? "–" : pct(e.totals.status_4xx, e.totals.requests)),
    el("td", { class: "num " + (e.totals.status_5xx > 0 ? "bad" : "") }, kind === "route" ? "–" : pct(e.totals.status_5xx, e.totals.requests)),
    el("td", { class: "num" }, kind === "route" ? "–" : fmt(e.totals.authz_denied)),
    el("td", { class: "num" }, kind === "upstream" ? fmt(e.totals.rate_limited) : "–"),
    el("td", {}, spark(e.series, fleet.step_seconds, fleet.slots, fleet.now, 160, 26))));
  const table = document.getElementById(id);
  const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: "10", class: "muted" }, "no traffic reported yet"))];
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}

function renderFleet(fleet) {
  const listeners = fleet.entities.filter(e => e.kind === "listener");
  const sum = f => listeners.reduce((a, e) => a + f(e), 0);
  const total = sum(e => e.totals.requests);
  const rate = sum(e => e.requests_per_second);
  const upstreams = fleet.entities.filter(e => e.kind === "upstream");
  const rateLimited = upstreams.reduce((a, e) => a + e.totals.rate_limited, 0);
  document.getElementById("cards").replaceChildren(
    card("nodes reporting", fmt(fleet.nodes.filter(n => n.streaming).length)),
    card("requests/s", fmt(rate, 1)),
    card("requests", fmt(total)),
    card("4xx", pct(sum(e => e.totals.status_4xx), total), sum(e => e.totals.status_4xx) > 0 ? "warn" : ""),
    card("5xx", pct(sum(e => e.totals.status_5xx), total), sum(e => e.totals.status_5xx) > 0 ? "bad" : ""),
    card("authz denied", fmt(sum(e => e.totals.authz_denied))),
    card("rate limited", fmt(rateLimited)));
  // Whole-fleet chart: the listeners' series added up.
  const merged = new Map();
  for (const e of listeners) for (const p of e.series) {
    const m = merged.get(p.t) || { t: p.t, requests: 0, status_4xx: 0, status_5xx: 0 };
    m.requests += p.requests; m.status_4xx += p.status_4xx; m.status_5xx += p.status_5xx;
    merged.set(p.t, m);
  }
  const chart = document.getElementById("fleet-chart");
  chart.replaceChildren(spark([...merged.values()], fleet.step_seconds, fleet.slots, fleet.now, Math.max(300, chart.clientWidth || 600), 88));
  document.getElementById("fleet-rate").textContent = `· last ${fleet.slots * fleet.step_seconds / 60} minutes, ${fleet.step_seconds}s steps`;
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const [st, fleet] = await Promise.all([getJson("/admin/status"), getJson("/admin/fleet")]);
    renderStatus(st);
    renderNodes(st, fleet);
    renderFleet(fleet);
    renderEntities("routes", "route", fleet);
    renderEntities("upstreams", "upstream", fleet);
    renderEntities("listeners", "listener", fleet);
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    updated.className = "muted";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (e) {
    // Shown, not thrown: xds-server restarting is a state to display, not a page error.
    updated.textContent = "cannot reach xds-server: " + e.message;
    updated.className = "bad";
  }
}

refresh();
setInterval(refresh, POLL_MS);
