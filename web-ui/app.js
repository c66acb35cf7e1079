// The rowsync admin UI: plain JavaScript on the JSON API (/api/v1), no build step, nothing
// loaded from elsewhere. Text from the server is only ever set as text, never as HTML.
"use strict";

const state = { csrf: sessionStorage.getItem("csrf") || "", user: sessionStorage.getItem("user") || "", role: sessionStorage.getItem("role") || "", lag: {}, editing: null, etag: "" };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

async function api(method, path, body, extraHeaders) {
  const headers = Object.assign({}, extraHeaders || {});
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (r.status === 401 && path !== "/api/v1/login") showLogin();
  return { ok: r.ok, status: r.status, data, headers: r.headers };
}

function showPage(name) {
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== name + "-page";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
  if (name === "mappings") loadMappings();
  if (name === "audit") loadAudit();
}

function showLogin() {
  $("nav").hidden = true;
  showPage("login");
}

function route() {
  const page = (location.hash || "#overview").slice(1);
  if (!state.csrf) return showLogin();
  $("nav").hidden = false;
  showPage(["overview", "mappings", "audit"].includes(page) ? page : "overview");
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await api("POST", "/api/v1/login", { user: f.get("user"), password: f.get("password") });
  if (!r.ok) { $("login-error").textContent = r.data?.error || "login failed"; return; }
  state.csrf = r.data.csrf_token; state.user = r.data.user; state.role = r.data.role;
  sessionStorage.setItem("csrf", state.csrf);
  sessionStorage.setItem("user", state.user);
  sessionStorage.setItem("role", state.role);
  $("who").textContent = `${state.user} (${state.role})`;
  $("login-error").textContent = "";
  e.target.reset();
  route();
  refresh();
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/api/v1/logout");
  state.csrf = ""; state.user = ""; state.role = "";
  for (const k of ["csrf", "user", "role"]) sessionStorage.removeItem(k);
  showLogin();
});

window.addEventListener("hashchange", route);

// ---- overview -------------------------------------------------------------------------

function fact(label, value) {
  return el("div", {}, el("span", {}, label), el("b", { class: "mono" }, value));
}

function targetCard(t) {
  const paused = t.state === "paused";
  const action = paused ? "resume" : "pause";
  const button = el("button", {
    type: "button", class: "secondary", "data-action": action, "data-target": t.name,
    onclick: async () => {
      if (!confirm(`${paused ? "Resume" : "Pause"} target ${t.name}?`)) return;
      const r = await api("POST", `/api/v1/targets/${encodeURIComponent(t.name)}/${action}`);
      if (!r.ok) alert(r.data?.error || r.status);
      refresh();
    },
  }, paused ? "Resume" : "Pause");
  const card = el("div", { class: "card target", "data-name": t.name },
    el("div", { class: "target-head" },
      el("h3", {}, t.name),
      el("span", { class: `state ${t.state.replace(" ", "-")}` }, t.state),
      state.role === "admin" ? button : ""),
    el("div", { class: "facts" },
      fact("checkpoint", t.checkpoint ? t.checkpoint.position : "–"),
      fact("gtid", t.checkpoint?.gtid || "–"),
      fact("lag", t.lag_seconds === null || t.lag_seconds === undefined ? "–" : `${t.lag_seconds} s`),
      fact("rows applied", `${t.rows_applied} (${Math.round(t.rows_per_second)}/s)`),
      fact("pending events", t.pending_events),
      fact("transactions", t.transactions_applied),
      fact("errors (transient / definite)", `${t.errors_transient} / ${t.errors_definite}`)));
  if (t.error) {
    card.append(el("p", { class: "error" }, `${t.error.class} error: ${t.error.message}`));
  }
  if (t.lock_holder) {
    card.append(el("p", {}, `Standing by: the target's lock is held by ${t.lock_holder}; this process takes over when that one stops.`));
  }
  const copying = t.copy.filter((c) => !c.done);
  if (copying.length) {
    card.append(el("h4", {}, "Copy progress"));
    for (const c of t.copy) {
      card.append(el("div", {}, `${c.table}: ${c.rows_copied} / ~${c.rows_estimated}`,
        el("progress", { max: Math.max(c.rows_estimated, c.rows_copied, 1), value: c.rows_copied })));
    }
  }
  if (t.applied.length) {
    card.append(el("table", { class: "list applied" },
      el("thead", {}, el("tr", {}, el("th", {}, "table"), el("th", {}, "inserts"), el("th", {}, "updates"), el("th", {}, "deletes"))),
      el("tbody", {}, t.applied.map((a) => el("tr", {},
        el("td", { class: "mono" }, a.table), el("td", {}, a.inserts), el("td", {}, a.updates), el("td", {}, a.deletes))))));
  }
  if (t.tables.length) {
    const rows = t.tables.map((s) => el("tr", {},
      el("td", { class: "mono" }, s.table),
      el("td", {}, s.state === "recopy_requested" ? "re-copy requested" : "needs re-copy"),
      el("td", {}, s.reason, s.statement ? el("div", { class: "hint mono" }, s.statement) : ""),
      el("td", {}, state.role === "admin" && s.state === "needs_recopy" ? el("button", {
        type: "button", class: "secondary",
        onclick: async () => {
          if (!confirm(`Re-copy ${s.table} into ${t.name}?`)) return;
          const r = await api("POST", `/api/v1/targets/${encodeURIComponent(t.name)}/tables/${encodeURIComponent(s.table)}/recopy`);
          if (!r.ok) alert(r.data?.error || r.status);
          refresh();
        },
      }, "Re-copy") : "")));
    card.append(el("table", { class: "list" },
      el("thead", {}, el("tr", {}, el("th", {}, "table"), el("th", {}, "state"), el("th", {}, "reason"), el("th", {}))),
      el("tbody", {}, rows)));
  }
  if (t.verified.length) {
    card.append(el("h4", {}, "Last verify"));
    card.append(el("table", { class: "list verified" },
      el("thead", {}, el("tr", {}, el("th", {}, "replica"), el("th", {}, "rows checked"), el("th", {}, "result"), el("th", {}, "when"))),
      el("tbody", {}, t.verified.map((v) => {
        const left = v.mismatched;
        const result = left > 0 ? `${left} differ${v.detail ? ": " + v.detail : ""}`
          : v.differing === 0 ? "equal" : `${v.differing} differed, repaired`;
        return el("tr", { class: left > 0 ? "error" : "" },
          el("td", { class: "mono" }, v.replica),
          el("td", {}, v.rows),
          el("td", {}, result),
          el("td", {}, new Date(v.finished_at * 1000).toLocaleString()));
      }))));
  }
  return card;
}

function drawLag() {
  const canvas = $("lag-chart");
  const width = canvas.clientWidth || 600;
  canvas.width = width;
  const h = canvas.height, ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, h);
  const now = Date.now(), span = 15 * 60 * 1000;
  // The same colours as the .c0 … .c4 legend classes in app.css.
  const colors = ["#2357c6", "#1c7c43", "#a86400", "#b42318", "#6941c6"];
  let max = 1;
  for (const points of Object.values(state.lag)) for (const [, v] of points) max = Math.max(max, v);
  ctx.strokeStyle = "#dde2ea"; ctx.beginPath(); ctx.moveTo(0, h - 1); ctx.lineTo(width, h - 1); ctx.stroke();
  const legend = [];
  Object.entries(state.lag).forEach(([name, points], i) => {
    ctx.strokeStyle = colors[i % colors.length]; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach(([t, v], j) => {
      const x = width - ((now - t) / span) * width, y = h - 4 - (v / max) * (h - 8);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    legend.push(el("span", { class: `swatch c${i % colors.length}` }, "■ "), `${name}  `);
  });
  $("lag-legend").replaceChildren(`max ${max} s — `, ...legend);
}

async function refresh() {
  if (!state.csrf || $("overview-page").hidden && $("mappings-page").hidden && $("audit-page").hidden) return;
  const r = await api("GET", "/api/v1/status");
  if (!r.ok) return;
  const s = r.data;
  $("source-line").textContent = s.source.connected
    ? `connected; head ${s.source.head.position}${s.source.head.gtid ? " gtid " + s.source.head.gtid : ""}`
    : `not connected: ${s.source.error}`;
  $("targets").replaceChildren(...s.targets.map(targetCard));
  // The daemon keeps the last 15 minutes, so the chart is whole from the first look.
  const lag = await api("GET", "/api/v1/lag");
  if (lag.ok) {
    state.lag = {};
    for (const series of lag.data) state.lag[series.target] = series.points.map(([t, v]) => [t * 1000, v]);
  }
  drawLag();
}

// ---- mappings -------------------------------------------------------------------------

let sourceTables = [];
let targetNames = [];

async function loadMappings() {
  const r = await api("GET", "/api/v1/mappings");
  if (!r.ok) return;
  state.etag = r.data.etag;
  $("mappings-mode").textContent = r.data.writable
    ? "Changes are written to the configuration file and applied at once."
    : `Read-only: ${r.data.read_only_reason}`;
  const canEdit = r.data.writable && state.role === "admin";
  $("new-mapping").hidden = !canEdit;
  $("mapping-rows").replaceChildren(...r.data.mappings.map((m) => el("tr", { "data-id": m.id },
    el("td", { class: "mono" }, m.id),
    el("td", { class: "mono" }, m.source),
    el("td", {}, m.targets.join(", ")),
    el("td", { class: "mono" }, m.table || ""),
    el("td", { class: "mono" }, m.where || ""),
    el("td", {}, canEdit ? el("span", { class: "buttons" },
      el("button", { type: "button", class: "secondary", onclick: () => openForm(m) }, "Edit"),
      el("button", { type: "button", class: "secondary", onclick: () => deleteMapping(m) }, "Delete")) : ""))));
  const status = await api("GET", "/api/v1/status");
  targetNames = status.ok ? status.data.targets.map((t) => t.name) : [];
}

async function deleteMapping(m) {
  if (!confirm(`Delete mapping ${m.id}? Its tables stop applying.`)) return;
  const drop = confirm("Also drop the replica tables rowsync filled for it? (Cancel keeps them as they are.)");
  const path = `/api/v1/mappings/${encodeURIComponent(m.id)}${drop ? "?drop_replica=true" : ""}`;
  const r = await api("DELETE", path, undefined, { "If-Match": state.etag });
  if (!r.ok) alert(r.data?.error || r.status);
  loadMappings();
}

function formValue() {
  const f = $("mapping-form");
  const source = f.elements.source.value;
  const targets = [...$("target-boxes").querySelectorAll("input:checked")].map((i) => i.value);
  const boxes = [...$("column-boxes").querySelectorAll("input")];
  const chosen = boxes.filter((i) => i.checked).map((i) => i.value);
  const body = { source, targets };
  if (state.editing) body.id = state.editing.id;
  if (f.elements.table.value.trim()) body.table = f.elements.table.value.trim();
  if (!boxes.length) {
    // The table's columns are not known here (source down, a `*` pattern): keep the list.
    if (state.editing?.columns) body.columns = state.editing.columns;
  } else if (chosen.length && chosen.length < boxes.length) body.columns = chosen;
  if (f.elements.where.value.trim()) body.where = f.elements.where.value.trim();
  return body;
}

function fillColumns(selectedColumns) {
  const t = sourceTables.find((t) => t.table === $("mapping-form").elements.source.value);
  const boxes = (t?.columns || []).map((c) => {
    const key = t.primary_key.includes(c.name);
    const lower = (selectedColumns || []).map((n) => n.toLowerCase());
    const checked = key || !selectedColumns || lower.includes(c.name.toLowerCase());
    return el("label", {}, el("input", { type: "checkbox", value: c.name, checked, disabled: key }),
      `${c.name} `, el("span", { class: "hint" }, c.type + (key ? ", key" : "")));
  });
  $("column-boxes").replaceChildren(...boxes);
}

async function openForm(m) {
  state.editing = m || null;
  const r = await api("GET", "/api/v1/source/tables");
  sourceTables = r.ok ? r.data : [];
  const f = $("mapping-form");
  f.hidden = false;
  $("mapping-form-title").textContent = m ? `Edit mapping ${m.id}` : "New mapping";
  const names = sourceTables.map((t) => t.table);
  if (m && !names.includes(m.source)) names.unshift(m.source);
  f.elements.source.replaceChildren(...names.map((n) => el("option", { value: n, selected: m && n === m.source }, n)));
  $("target-boxes").replaceChildren(...targetNames.map((n) =>
    el("label", {}, el("input", { type: "checkbox", value: n, checked: m ? m.targets.includes(n) : false }), n)));
  f.elements.table.value = m?.table || "";
  f.elements.where.value = m?.where || "";
  fillColumns(m?.columns);
  $("mapping-error").textContent = "";
  $("preview").replaceChildren();
  $("save-button").disabled = true;
  f.scrollIntoView();
}

$("new-mapping").addEventListener("click", () => openForm(null));
$("cancel-button").addEventListener("click", () => { $("mapping-form").hidden = true; });
$("mapping-form").elements.source.addEventListener("change", () => fillColumns(null));
$("mapping-form").addEventListener("input", () => { $("save-button").disabled = true; });

async function submitMapping(dryRun) {
  const body = formValue();
  const path = state.editing ? `/api/v1/mappings/${encodeURIComponent(state.editing.id)}` : "/api/v1/mappings";
  const r = await api(state.editing ? "PUT" : "POST", path + (dryRun ? "?dry_run=true" : ""), body, { "If-Match": state.etag });
  if (!r.ok) {
    $("mapping-error").textContent = (r.data?.field ? `${r.data.field}: ` : "") + (r.data?.error || r.status);
    $("save-button").disabled = true;
    return;
  }
  $("mapping-error").textContent = "";
  const effects = r.data.effects.length
    ? r.data.effects.map((e) => el("li", {}, `${e.target}: ${e.mapping} — ${e.effect}`))
    : [el("li", {}, "nothing changes in the targets")];
  $("preview").replaceChildren(el("p", {}, dryRun ? "This will happen:" : "Saved; applying:"), el("ul", {}, effects));
  $("save-button").disabled = !dryRun;
  if (!dryRun) { state.editing = null; $("mapping-form").hidden = true; loadMappings(); }
}

$("preview-button").addEventListener("click", () => submitMapping(true));
$("mapping-form").addEventListener("submit", (e) => { e.preventDefault(); submitMapping(false); });

// ---- audit ----------------------------------------------------------------------------

async function loadAudit() {
  const r = await api("GET", "/api/v1/audit");
  if (!r.ok) return;
  $("audit-rows").replaceChildren(...r.data.map((a) => el("tr", {},
    el("td", {}, new Date(a.at * 1000).toLocaleString()),
    el("td", {}, a.user), el("td", {}, a.action), el("td", { class: "mono" }, a.subject))));
}

// ---- start ----------------------------------------------------------------------------

(async () => {
  if (state.csrf) {
    // Still logged in? The session cookie decides.
    const r = await api("GET", "/api/v1/status");
    if (!r.ok) { state.csrf = ""; sessionStorage.removeItem("csrf"); }
  }
  if (state.csrf) $("who").textContent = `${state.user} (${state.role})`;
  route();
  refresh();
  setInterval(refresh, 2000);
})();
