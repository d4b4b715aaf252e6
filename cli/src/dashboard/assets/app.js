// Remora's dashboard: draws each survey the server pushes (/events, one JSON
// snapshot per message). Plain JavaScript, no dependencies, nothing fetched
// from elsewhere. Every element the browser test reads carries data-*
// attributes: data-node (a node card), data-object and data-names (an actor row),
// data-length / data-capacity (a mailbox bar), data-at (the survey's time).
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const rate = (r) => (r === null || r === undefined) ? "–" : (r >= 100 ? r.toFixed(0) : r.toFixed(1));
const short = (id) => String(id).slice(0, 8);

function uptime(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 10000) return n.toFixed(0) + " B/s";
  if (n < 10000000) return (n / 1024).toFixed(0) + " KiB/s";
  return (n / 1048576).toFixed(0) + " MiB/s";
}

function mailboxBar(a) {
  const cap = a.capacity;
  const share = cap > 0 ? Math.min(1, a.length / cap) : (a.length > 0 ? 1 : 0);
  const pct = (share * 100).toFixed(1);
  const cls = share >= 0.9 ? "bar full" : share >= 0.5 ? "bar high" : "bar";
  // A queued message is always visible, however large the capacity.
  const width = a.length > 0 ? `max(2px, ${pct}%)` : "0%";
  return `<div class="mailbox"><div class="${cls}" data-length="${a.length}" data-capacity="${cap}"`
    + ` title="${a.length} of ${cap} (${esc(a.mailbox_kind)})"><div class="fill" style="width: ${width}"></div></div>`
    + `<span>${a.length}/${cap}</span></div>`;
}

// An actor's registry names, and its groups in brackets, under its label.
function bound(a) {
  const said = a.names.map(esc).concat(a.groups.map((g) => `[${esc(g)}]`));
  return said.length ? `<div class="bound">${said.join(" ")}</div>` : "";
}

function nodeCard(n) {
  const name = n.name || short(n.id);
  const actors = n.actors.map((a) => `<tr data-object="${esc(a.object || "")}" data-actor="${esc(a.id)}"`
    + ` data-names="${esc(a.names.join(","))}">`
    + `<td>${esc(a.label)}${bound(a)}</td><td>${esc(a.interface)}</td><td>${mailboxBar(a)}</td>`
    + `<td class="${a.busy ? "busy" : "empty"}">${a.busy ? "busy" : "idle"}</td>`
    + `<td class="num">${a.handled}</td><td class="num">${rate(a.handled_per_s)}</td>`
    + `<td class="num">${a.panics}/${a.restarts}</td></tr>`).join("");
  const methods = n.methods.filter((m) => m.calls > 0 || m.errors > 0)
    .sort((x, y) => (y.calls_per_s || 0) - (x.calls_per_s || 0) || y.calls - x.calls)
    .slice(0, 5)
    .map((m) => `<tr><td>${esc(m.interface)}.${esc(m.method)}</td><td class="num">${m.calls}</td>`
      + `<td class="num">${rate(m.calls_per_s)}</td><td class="num">${m.errors}</td>`
      + `<td class="num">${rate(m.errors_per_s)}</td></tr>`).join("");
  const body = n.status === "up"
    ? `<div class="figures"><span>calls/s <b class="calls-rate">${rate(n.calls_per_s)}</b></span>`
      + `<span class="${n.errors > 0 ? "errors" : ""}">errors <b class="error-count">${n.errors}</b> (${rate(n.errors_per_s)}/s)</span>`
      + `<span>actors <b>${n.actor_count}</b>${n.actor_count > n.actors.length ? ` (the ${n.actors.length} fullest shown)` : ""}</span></div>`
      + `<table class="actors"><tr><th>actor</th><th>interface</th><th>mailbox</th><th>state</th>`
      + `<th>handled</th><th>msgs/s</th><th title="panics/restarts">p/r</th></tr>${actors}</table>`
      + (methods ? `<table class="methods"><tr><th>method</th><th>calls</th><th>calls/s</th>`
        + `<th>errors</th><th>errors/s</th></tr>${methods}</table>` : "")
    : `<p class="error">${esc(n.error)}</p>`;
  return `<article class="node ${n.status}" data-node="${esc(n.id)}" data-name="${esc(n.name || "")}">`
    + `<div class="head"><h3>${esc(name)}</h3><span class="badge">${esc(n.status)}</span>`
    + `<span class="meta">${esc(n.addr)} · ${short(n.id)} · up ${uptime(n.uptime_ms)}`
    + `${n.version ? " · v" + esc(n.version) : ""}</span></div>${body}</article>`;
}

function graph(s) {
  const W = 440, H = 340, cx = W / 2, cy = H / 2, R = 120;
  const vertices = s.nodes.map((n) => ({ id: n.id, name: n.name || short(n.id), cls: n.status }))
    .concat(s.peers.map((p) => ({ id: p.id, name: p.name || short(p.id), cls: "outside" })));
  const at = new Map();
  vertices.forEach((v, i) => {
    const t = (2 * Math.PI * i) / Math.max(1, vertices.length) - Math.PI / 2;
    at.set(v.id, { x: cx + R * Math.cos(t), y: cy + R * Math.sin(t) });
  });
  const edges = s.edges.filter((e) => at.has(e.from) && at.has(e.to)).map((e) => {
    const a = at.get(e.from), b = at.get(e.to);
    // Bent to its left, so that A→B and B→A are two curves.
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2, dx = b.x - a.x, dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1, bend = 18;
    const qx = mx - (dy / len) * bend, qy = my + (dx / len) * bend;
    const w = 1 + Math.min(9, Math.log2(1 + (e.bytes_per_s || 0) / 256));
    const label = e.frames_per_s ? rate(e.frames_per_s) + " f/s" : "";
    return `<path class="edge" data-from="${esc(e.from)}" data-to="${esc(e.to)}"`
      + ` data-bytes="${e.bytes_per_s ?? ""}" data-frames="${e.frames_per_s ?? ""}" marker-end="url(#arrow)"`
      + ` stroke-width="${w.toFixed(1)}" d="M${a.x},${a.y} Q${qx},${qy} ${b.x},${b.y}">`
      + `<title>${bytes(e.bytes_per_s)}, ${rate(e.frames_per_s)} frames/s, ${e.pending_calls} pending</title></path>`
      + (label ? `<text class="edge-label" x="${qx}" y="${qy}">${label}</text>` : "");
  }).join("");
  const circles = vertices.map((v) => {
    const p = at.get(v.id);
    return `<g class="vertex ${v.cls}" data-vertex="${esc(v.id)}"><circle cx="${p.x}" cy="${p.y}" r="26"></circle>`
      + `<text x="${p.x}" y="${p.y + 4}">${esc(v.name)}</text></g>`;
  }).join("");
  // In user units, so that a thick edge does not grow a huge arrow; it stops
  // at the circle's rim (radius 26).
  return `<defs><marker id="arrow" viewBox="0 0 10 10" refX="42" refY="5" markerWidth="8" markerHeight="8"`
    + ` markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7d8ea6"></path></marker></defs>`
    + edges + circles;
}

function render(s) {
  const nameOf = new Map(s.nodes.map((n) => [n.id, n.name || short(n.id)]));
  const up = s.nodes.filter((n) => n.status === "up").length;
  $("summary").textContent = `registry ${s.registry} · ${s.nodes.length} nodes (${up} up) · `
    + `${s.names.length} names · ${s.groups.length} groups`;
  $("status").textContent = s.error ? s.error : "updated " + new Date(s.at_ms).toLocaleTimeString();
  $("status").className = s.error ? "status stale" : "status";
  $("status").dataset.at = s.at_ms;
  $("nodes").innerHTML = s.nodes.map(nodeCard).join("");
  $("graph").innerHTML = graph(s);
  $("names").innerHTML = `<tr><th>name</th><th>interface</th><th>node</th></tr>`
    + (s.names.map((n) => `<tr data-bound="${esc(n.name)}"><td>${esc(n.name)}</td><td>${esc(n.interface)}</td>`
      + `<td>${esc(nameOf.get(n.node) || short(n.node))}</td></tr>`).join("")
      || `<tr><td class="empty" colspan="3">no names bound</td></tr>`);
  $("groups").innerHTML = `<tr><th>group</th><th>interface</th><th>members</th></tr>`
    + (s.groups.map((g) => `<tr data-group="${esc(g.group)}"><td>${esc(g.group)}</td><td>${esc(g.interface)}</td>`
      + `<td>${g.members.map((m) => esc(nameOf.get(m) || short(m))).join(", ")}</td></tr>`).join("")
      || `<tr><td class="empty" colspan="3">no groups</td></tr>`);
}

function connect() {
  const events = new EventSource("events");
  events.onmessage = (m) => {
    try { render(JSON.parse(m.data)); } catch (e) { $("status").textContent = "bad survey: " + e; }
  };
  // EventSource reconnects by itself; say so meanwhile.
  events.onerror = () => {
    $("status").textContent = "disconnected from the dashboard server, retrying";
    $("status").className = "status stale";
  };
}

connect();
