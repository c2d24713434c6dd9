// collapsewatch web page: reads the REST API (/api/v1) and draws SVG by hand.
// No framework, no build step, no network access beyond this server.
"use strict";

(() => {
  const API = "/api/v1";
  const KEY_STORAGE = "collapsewatch.apiKey";
  const REFRESH_MS = 10000;
  const SIGNALS = ["diversity", "tail_coverage", "sameness"];
  const SIGNAL_LABEL = {
    diversity: "Diversity",
    tail_coverage: "Tail coverage",
    sameness: "Sameness",
  };
  const SIGNAL_HINT = {
    diversity: "falls in late collapse",
    tail_coverage: "falls first: early collapse",
    sameness: "rises under collapse",
  };
  const HEALTH_LABEL = {
    healthy: "healthy",
    early_collapse: "early collapse",
    collapse: "collapse",
    insufficient_data: "insufficient data",
  };
  const WINDOW_CHOICES = [50, 200, 1000];
  const DEFAULT_WINDOWS = 200;
  // Enough points to show the shape on a ~400 px wide chart; more only costs DOM nodes.
  const MAX_POINTS = 200;
  // browsers open at most 6 HTTP/1.1 connections per host; leave room for the charts
  const HEALTH_FETCH_CONCURRENCY = 4;

  const state = {
    rawModels: [],
    models: [],
    health: new Map(), // model name -> latest Score JSON from /health
    cards: new Map(), // model name -> card state
    firing: [],
    recent: [],
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    pendingAck: null,
    refreshTimer: null,
    observer: null,
  };

  // ---------------------------------------------------------------- helpers

  const $ = (sel, root = document) => root.querySelector(sel);

  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function fmtRatio(v) {
    return isNum(v) ? v.toFixed(2) : "–";
  }

  function fmtValue(v) {
    if (!isNum(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 100) return v.toFixed(1);
    if (a === 0) return "0";
    if (a < 0.001) return v.toExponential(2);
    return v.toPrecision(3);
  }

  function fmtInt(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–";
  }

  function parseTime(s) {
    if (!s) return null;
    // timestamps are UTC; one without a zone designator must not be read as local time
    const text = String(s);
    const t = Date.parse(/T[\d:.]+$/.test(text) ? `${text}Z` : text);
    return Number.isNaN(t) ? null : t;
  }

  function pad2(n) {
    return String(n).padStart(2, "0");
  }

  function fmtClock(t) {
    const d = new Date(t);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function fmtDate(t) {
    const d = new Date(t);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(t)}`;
  }

  function fmtAgo(t) {
    if (t == null) return "never";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function timeHtml(t) {
    if (t == null) return '<span class="muted">never</span>';
    return `<time datetime="${esc(new Date(t).toISOString())}" title="${esc(fmtDate(t))}">` +
      `${esc(fmtAgo(t))}</time>`;
  }

  function shortSha(sha) {
    return sha ? String(sha).slice(0, 12) : "–";
  }

  function isDemo(model) {
    return /^demo-/.test(model.name) || /^demo\b/i.test(model.description || "");
  }

  function healthBadge(health) {
    if (health == null) return '<span class="badge h-unknown" data-health="">…</span>';
    const h = HEALTH_LABEL[health] ? health : "insufficient_data";
    return `<span class="badge h-${h}" data-health="${h}">${esc(HEALTH_LABEL[h])}</span>`;
  }

  function listOf(body, key) {
    return body && Array.isArray(body[key]) ? body[key] : [];
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    let resp;
    try {
      resp = await fetch(API + path, { ...options, headers });
    } catch (exc) {
      throw new ApiError(0, "the collapsewatch server is not reachable");
    }
    const text = await resp.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (exc) {
        body = text;
      }
    }
    if (!resp.ok) {
      const detail = body && typeof body === "object" && body.detail ? body.detail : resp.statusText;
      throw new ApiError(resp.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return body;
  }

  function showError(message) {
    const el = $("#error");
    if (!message) {
      el.hidden = true;
      el.textContent = "";
      return;
    }
    el.hidden = false;
    el.textContent = message;
  }

  // ------------------------------------------------------------ model data

  // The model as the page needs it: GET /models (ModelPublic) plus its latest health, from
  // the list itself when the server includes it, else from GET /models/{name}/health.
  function modelView(m) {
    const ref = m.reference || {};
    const inList = typeof m.health === "string";
    const cached = state.health.get(m.name) || null;
    // null until known: the badge then shows a placeholder rather than a wrong state
    const health = inList ? m.health : (cached && cached.health) || null;
    const lastEval = parseTime(inList ? m.last_evaluation_at
      : cached && (cached.created_at || cached.window_end));
    return {
      name: m.name,
      description: m.description || "",
      health,
      demo: isDemo(m),
      reference: { name: ref.name ?? null, version: ref.version ?? null, sha256: ref.sha256 ?? null },
      baseline: m.baseline || null,
      baselineStatus: m.baseline_status || (m.baseline ? "set" : "none"),
      autoBaselineWindows: m.auto_baseline_windows,
      windowSize: m.window ? m.window.size : null,
      samples: m.samples_ingested ?? null,
      lastEval,
      hasHealthInList: inList,
    };
  }

  async function loadHealthForList() {
    // Only when GET /models does not carry the health itself.
    const todo = state.models.filter((v) => !v.hasHealthInList).map((v) => v.name);
    let next = 0;
    async function worker() {
      while (next < todo.length) {
        const name = todo[next++];
        try {
          state.health.set(name, await api(`/models/${encodeURIComponent(name)}/health`));
        } catch (exc) {
          state.health.delete(name);
        }
      }
    }
    await Promise.all(Array.from({ length: HEALTH_FETCH_CONCURRENCY }, worker));
  }

  function buildViews() {
    const views = state.rawModels.map(modelView);
    views.sort((a, b) => (b.demo - a.demo) || a.name.localeCompare(b.name));
    state.models = views;
  }

  async function loadModels() {
    state.rawModels = listOf(await api("/models"), "models");
    buildViews();
  }

  async function loadAlerts() {
    const [firing, resolved] = await Promise.all([
      api("/alerts?state=firing"),
      api("/alerts?state=resolved&limit=20"),
    ]);
    state.firing = listOf(firing, "alerts");
    state.recent = listOf(resolved, "alerts")
      .sort((a, b) => (parseTime(b.resolved_at || b.started_at) || 0) -
        (parseTime(a.resolved_at || a.started_at) || 0))
      .slice(0, 20);
  }

  // ---------------------------------------------------------------- alerts

  function alertModel(a) {
    return a.model || "";
  }

  function alertRow(a, firing) {
    const acked = Boolean(a.acknowledged_at);
    const ack = acked
      ? `<span class="acked">acknowledged${a.acknowledged_by ? ` by ${esc(a.acknowledged_by)}` : ""}` +
        ` ${timeHtml(parseTime(a.acknowledged_at))}</span>`
      : (firing ? `<button type="button" class="ack" data-alert-id="${esc(a.id)}">Acknowledge</button>` : "");
    const when = firing
      ? `since ${timeHtml(parseTime(a.started_at))}`
      : `resolved ${timeHtml(parseTime(a.resolved_at))}`;
    return `<tr class="alert ${firing ? "firing" : "resolved"}" data-alert-id="${esc(a.id)}"
        data-state="${acked ? "acknowledged" : esc(a.state || (firing ? "firing" : "resolved"))}">
      <td><span class="sev sev-${esc(a.severity)}">${esc(a.severity)}</span></td>
      <td><a href="#model-${esc(alertModel(a))}" class="model-link">${esc(alertModel(a))}</a></td>
      <td>${esc(String(a.kind || "").replace(/_/g, " "))}</td>
      <td class="summary-cell">${esc(a.summary)}</td>
      <td>${when}</td>
      <td class="ack-cell">${ack}</td>
    </tr>`;
  }

  function renderAlerts() {
    const body = $("#alerts-body");
    const head = `<thead><tr><th>Severity</th><th>Model</th><th>Alert</th><th>Summary</th>
      <th>When</th><th></th></tr></thead>`;
    let html = "";
    if (state.firing.length) {
      html += `<h3 class="sub">Firing</h3><table class="alerts firing-table">${head}<tbody>` +
        state.firing.map((a) => alertRow(a, true)).join("") + "</tbody></table>";
    } else {
      html += '<p class="ok-line">No alert is firing.</p>';
    }
    if (state.recent.length) {
      html += `<h3 class="sub">Recently resolved</h3><table class="alerts">${head}<tbody>` +
        state.recent.map((a) => alertRow(a, false)).join("") + "</tbody></table>";
    }
    body.className = "";
    body.innerHTML = html;
  }

  async function acknowledge(id) {
    if (!state.key) {
      state.pendingAck = id;
      openKeyForm("Enter an API key to acknowledge the alert.");
      return;
    }
    const button = document.querySelector(`button.ack[data-alert-id="${CSS.escape(String(id))}"]`);
    if (button) {
      button.disabled = true;
      button.textContent = "Acknowledging…";
    }
    try {
      const updated = await api(`/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
      const merged = (a) => (String(a.id) === String(id)
        ? { ...a, ...(updated && typeof updated === "object" ? updated : {}),
            acknowledged_at: (updated && updated.acknowledged_at) || a.acknowledged_at ||
              new Date().toISOString() }
        : a);
      state.firing = state.firing.map(merged);
      state.recent = state.recent.map(merged);
      renderAlerts();
    } catch (exc) {
      if (exc.status === 401 || exc.status === 403) {
        // an unknown key would also be refused on every read: do not keep it
        if (exc.status === 401) forgetKey();
        state.pendingAck = id;
        openKeyForm(`The key was refused (${exc.message}). Enter another key.`);
      } else {
        showError(`Could not acknowledge alert ${id}: ${exc.message}`);
      }
      if (button) {
        button.disabled = false;
        button.textContent = "Acknowledge";
      }
    }
  }

  // -------------------------------------------------------------- API key

  function updateKeyButton() {
    const button = $("#key-button");
    button.textContent = state.key ? "API key ✓" : "API key";
    button.title = state.key ? "A key is kept for this tab" : "Set an API key";
  }

  function forgetKey() {
    state.key = "";
    sessionStorage.removeItem(KEY_STORAGE);
    updateKeyButton();
  }

  function openKeyForm(message) {
    const form = $("#key-form");
    form.hidden = false;
    let note = $("#key-note");
    if (!note) {
      note = document.createElement("p");
      note.id = "key-note";
      note.className = "note";
      form.insertBefore(note, form.firstChild);
    }
    note.textContent = message || "";
    note.hidden = !message;
    const input = $("#key-input");
    input.value = "";
    input.focus();
  }

  function closeKeyForm() {
    $("#key-form").hidden = true;
  }

  function setupKeyForm() {
    updateKeyButton();
    $("#key-button").addEventListener("click", () => {
      if ($("#key-form").hidden) openKeyForm("");
      else closeKeyForm();
    });
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("#key-input").value.trim();
      if (!key) {
        openKeyForm("The key is empty.");
        return;
      }
      state.key = key;
      sessionStorage.setItem(KEY_STORAGE, key);
      updateKeyButton();
      closeKeyForm();
      const pending = state.pendingAck;
      state.pendingAck = null;
      if (pending != null) acknowledge(pending);
      else refresh();
    });
    $("#key-clear").addEventListener("click", () => {
      forgetKey();
      closeKeyForm();
    });
    $("#key-cancel").addEventListener("click", () => {
      state.pendingAck = null;
      closeKeyForm();
    });
  }

  // ----------------------------------------------------------------- fleet

  function referenceHtml(v) {
    if (!v.reference.name && !v.reference.sha256) return '<span class="muted">–</span>';
    const version = v.reference.version != null ? ` v${esc(v.reference.version)}` : "";
    return `${esc(v.reference.name || "")}${version} <code class="sha" title="sha256 ${esc(v.reference.sha256 || "")}">` +
      `${esc(shortSha(v.reference.sha256))}</code>`;
  }

  function renderFleet() {
    const body = $("#fleet-body");
    if (!state.models.length) {
      body.className = "muted";
      body.innerHTML = "No model is monitored yet. Create one with <code>POST /api/v1/models</code>, " +
        "or run <code>collapsewatch serve --demo</code> to see demo models.";
      return;
    }
    const rows = state.models.map((v) => `
      <tr data-model="${esc(v.name)}">
        <td><a href="#model-${esc(v.name)}" class="model-link">${esc(v.name)}</a>
          ${v.demo ? '<span class="tag demo">demo</span>' : ""}</td>
        <td>${healthBadge(v.health)}</td>
        <td>${referenceHtml(v)}</td>
        <td class="num">${fmtInt(v.samples)}</td>
        <td>${timeHtml(v.lastEval)}</td>
      </tr>`).join("");
    body.className = "";
    body.innerHTML = `<table class="fleet"><thead><tr><th>Model</th><th>Health</th>
      <th>Reference (sha256)</th><th class="num">Samples ingested</th><th>Last evaluation</th>
      </tr></thead><tbody>${rows}</tbody></table>`;
    const counts = {};
    for (const v of state.models) counts[v.health] = (counts[v.health] || 0) + 1;
    const parts = [`${state.models.length} model${state.models.length === 1 ? "" : "s"}`];
    for (const h of ["collapse", "early_collapse", "healthy", "insufficient_data"]) {
      if (counts[h]) parts.push(`${counts[h]} ${HEALTH_LABEL[h]}`);
    }
    parts.push(`${state.firing.length} firing alert${state.firing.length === 1 ? "" : "s"}`);
    $("#summary").textContent = parts.join(" · ");
    $("#demo-banner").hidden = !state.models.some((v) => v.demo);
  }

  // ----------------------------------------------------------------- cards

  function cardId(name) {
    return `model-${name}`;
  }

  function ensureCards() {
    const container = $("#details");
    const wanted = new Set(state.models.map((v) => v.name));
    for (const [name, card] of state.cards) {
      if (!wanted.has(name)) {
        state.observer.unobserve(card.el);
        card.el.remove();
        state.cards.delete(name);
      }
    }
    let previous = null;
    for (const v of state.models) {
      let card = state.cards.get(v.name);
      if (!card) {
        const el = document.createElement("article");
        el.className = "card";
        el.id = cardId(v.name);
        el.dataset.model = v.name;
        const options = WINDOW_CHOICES.map((n) =>
          `<option value="${n}"${n === DEFAULT_WINDOWS ? " selected" : ""}>${n}</option>`).join("");
        el.innerHTML = `<header class="card-head"><div class="head-info"></div>
          <label class="windows">last <select class="window-count" aria-label="windows shown">${options}</select>
          windows</label></header>
          <div class="card-body"><p class="muted placeholder">Charts load when this model is
          on screen.</p></div>`;
        card = { el, name: v.name, windows: DEFAULT_WINDOWS, evaluations: null, loading: false,
          stale: true, visible: false, error: null };
        state.cards.set(v.name, card);
        state.observer.observe(el);
      }
      // keep the order of the fleet table
      const after = previous ? previous.nextSibling : container.firstChild;
      if (card.el !== after) container.insertBefore(card.el, after);
      previous = card.el;
      renderCardHead(card, v);
    }
  }

  function baselineHtml(v) {
    const b = v.baseline;
    if (b && (b.name || b.sha256)) {
      const ratios = b.human_ratios || {};
      const parts = SIGNALS.filter((s) => isNum(ratios[s]))
        .map((s) => `${SIGNAL_LABEL[s].toLowerCase()} ${fmtRatio(ratios[s])}×`);
      const source = b.source ? ` (${esc(b.source)})` : "";
      return `baseline ${esc(b.name || "")}${source} <code class="sha" title="sha256 ${esc(b.sha256 || "")}">` +
        `${esc(shortSha(b.sha256))}</code>${parts.length ? ` · vs human: ${esc(parts.join(", "))}` : ""}`;
    }
    if (v.baselineStatus === "collecting") {
      const k = isNum(v.autoBaselineWindows) ? `${v.autoBaselineWindows} ` : "";
      return `baseline: collecting (the first ${esc(k)}windows become the baseline)`;
    }
    return "no baseline (judged against human text only)";
  }

  // The header's text changes on every refresh; the window selector is built once so that
  // a refresh never closes it under the user's pointer.
  function renderCardHead(card, v) {
    const head = card.el.querySelector(".head-info");
    head.innerHTML = `
      <div class="title-row">
        <h3>${esc(v.name)}</h3>
        ${v.demo ? '<span class="tag demo">demo</span>' : ""}
        ${healthBadge(v.health)}
      </div>
      ${v.description ? `<p class="desc">${esc(v.description)}</p>` : ""}
      <p class="meta">reference ${referenceHtml(v)} · ${baselineHtml(v)}
        · ${v.windowSize ? `window ${fmtInt(v.windowSize)} samples · ` : ""}<span class="ingested">${fmtInt(v.samples)}</span> samples ingested
        · last evaluation ${timeHtml(v.lastEval)}</p>`;
  }

  async function loadCard(card) {
    if (card.loading) return;
    card.loading = true;
    try {
      const body = await api(`/models/${encodeURIComponent(card.name)}/evaluations?limit=${card.windows}`);
      // newest first from the API; charts run left to right in time
      card.evaluations = listOf(body, "evaluations").slice().reverse();
      card.error = null;
      card.stale = false;
    } catch (exc) {
      card.error = exc.message;
    } finally {
      card.loading = false;
    }
    renderCardBody(card);
  }

  function evalTime(e) {
    return parseTime(e.window_end) ?? parseTime(e.created_at) ?? parseTime(e.window_start);
  }

  // A signal's band as [low, high], or null: the Score JSON gives the human band of each
  // signal in ratio units (1.0 = human mean) and the baseline band in baseline-ratio units.
  function bandOf(s, lowKey, highKey) {
    return isNum(s[lowKey]) && isNum(s[highKey]) ? [s[lowKey], s[highKey]] : null;
  }

  function seriesFor(evaluations, signal) {
    const out = [];
    for (const e of evaluations) {
      const s = (e.signals || {})[signal];
      const t = evalTime(e);
      if (!s || !isNum(s.ratio) || t == null) continue;
      // Signals are geometric means of metric ratios, so ratio / baseline_ratio is the
      // baseline's own level on the human scale, and its band scales the same way.
      const level = isNum(s.baseline_ratio) && s.baseline_ratio > 0
        ? s.ratio / s.baseline_ratio : null;
      const baseBand = level != null ? bandOf(s, "baseline_low", "baseline_high") : null;
      out.push({
        x: t, y: s.ratio, band: bandOf(s, "human_low", "human_high"), baselineLevel: level,
        baselineBand: baseBand ? [baseBand[0] * level, baseBand[1] * level] : null,
        outside: Boolean(s.outside_band), outsideBaseline: Boolean(s.outside_baseline_band),
        baselineRatio: s.baseline_ratio, health: e.health, id: e.id,
      });
    }
    return out;
  }

  // Largest-Triangle-Three-Buckets downsampling: keeps the visual shape of a series with
  // `threshold` points (S. Steinarsson, "Downsampling Time Series for Visual
  // Representation", MSc thesis, University of Iceland, 2013).
  function lttb(points, threshold) {
    const n = points.length;
    if (threshold >= n || threshold < 3) return points;
    const sampled = [points[0]];
    const every = (n - 2) / (threshold - 2);
    let a = 0;
    for (let i = 0; i < threshold - 2; i++) {
      const avgStart = Math.floor((i + 1) * every) + 1;
      const avgEnd = Math.min(Math.floor((i + 2) * every) + 1, n);
      let avgX = 0;
      let avgY = 0;
      for (let j = avgStart; j < avgEnd; j++) {
        avgX += points[j].x;
        avgY += points[j].y;
      }
      const count = Math.max(1, avgEnd - avgStart);
      avgX /= count;
      avgY /= count;
      const start = Math.floor(i * every) + 1;
      const end = Math.floor((i + 1) * every) + 1;
      let best = start;
      let bestArea = -1;
      for (let j = start; j < end; j++) {
        const area = Math.abs((points[a].x - avgX) * (points[j].y - points[a].y) -
          (points[a].x - points[j].x) * (avgY - points[a].y));
        if (area > bestArea) {
          bestArea = area;
          best = j;
        }
      }
      sampled.push(points[best]);
      a = best;
    }
    sampled.push(points[n - 1]);
    return sampled;
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / Math.max(1, count);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.round(v / step) * step);
    }
    return ticks;
  }

  const W = 400;
  const H = 170;
  const M = { left: 38, right: 8, top: 8, bottom: 22 };

  function xScale(domain, width = W) {
    const [x0, x1] = domain;
    const span = x1 - x0 || 1;
    return (x) => M.left + ((x - x0) / span) * (width - M.left - M.right);
  }

  // [first sample time, last sample time] of a window (its end alone when the start is unknown)
  function windowSpan(e) {
    const end = evalTime(e);
    const start = parseTime(e.window_start);
    return [start != null && end != null && start <= end ? start : end, end];
  }

  function timeDomain(evaluations) {
    const spans = evaluations.map(windowSpan).filter((span) => span[1] != null);
    if (!spans.length) return null;
    let lo = Math.min(...spans.map((span) => span[0]));
    let hi = Math.max(...spans.map((span) => span[1]));
    if (hi - lo < 1000) {
      lo -= 30000;
      hi += 30000;
    }
    return [lo, hi];
  }

  function timeTicks(domain) {
    const [lo, hi] = domain;
    const longRange = hi - lo > 36 * 3600 * 1000;
    const label = (t) => {
      const d = new Date(t);
      return longRange ? `${d.getMonth() + 1}/${d.getDate()} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`
        : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    };
    return [lo, (lo + hi) / 2, hi].map((t) => ({ t, label: label(t) }));
  }

  function pointTitle(p, signal) {
    const lines = [
      `${SIGNAL_LABEL[signal]} ${fmtRatio(p.y)}× human`,
      p.band ? `human band ${fmtRatio(p.band[0])}–${fmtRatio(p.band[1])}` : null,
      isNum(p.baselineRatio) ? `${fmtRatio(p.baselineRatio)}× baseline` : null,
      p.baselineBand ? `baseline band ${fmtRatio(p.baselineBand[0])}–${fmtRatio(p.baselineBand[1])} (× human)` : null,
      p.outside ? "outside the human band" : null,
      p.outsideBaseline ? "outside the baseline band" : null,
      `health: ${HEALTH_LABEL[p.health] || p.health || "–"}`,
      fmtDate(p.x),
    ];
    return lines.filter(Boolean).join("\n");
  }

  function median(xs) {
    const sorted = xs.slice().sort((p, q) => p - q);
    return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
  }

  // Every k-th point (and the last) so smooth lines stay under `limit` vertices.
  function stride(points, limit) {
    if (points.length <= limit) return points;
    const k = Math.ceil(points.length / limit);
    const out = points.filter((_, i) => i % k === 0);
    if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
    return out;
  }

  // An area between two bounds over time: a rectangle for one window, else a polygon.
  function areaSvg(points, bounds, x, y, cls, title) {
    const banded = points.filter((p) => bounds(p));
    if (!banded.length) return "";
    if (banded.length === 1) {
      const [b0, b1] = bounds(banded[0]);
      return `<rect class="${cls}" x="${M.left}" width="${W - M.left - M.right}" y="${y(b1).toFixed(1)}" height="${Math.max(0.5, y(b0) - y(b1)).toFixed(1)}"><title>${esc(title)} ${fmtRatio(b0)}–${fmtRatio(b1)}</title></rect>`;
    }
    const top = banded.map((p) => `${x(p.x).toFixed(1)},${y(bounds(p)[1]).toFixed(1)}`);
    const bottom = banded.slice().reverse().map((p) => `${x(p.x).toFixed(1)},${y(bounds(p)[0]).toFixed(1)}`);
    return `<polygon class="${cls}" points="${top.concat(bottom).join(" ")}"><title>${esc(title)}</title></polygon>`;
  }

  let clipCounter = 0;

  function chartSvg(signal, series, domain) {
    const x = xScale(domain);
    // The scale covers the data, 1.0, the baseline level and the typical (median) band
    // edges; an unusually wide band in one window is clipped rather than squashing the rest.
    const values = [1];
    for (const p of series) {
      values.push(p.y);
      if (isNum(p.baselineLevel)) values.push(p.baselineLevel);
    }
    for (const key of ["band", "baselineBand"]) {
      const lows = series.filter((p) => p[key]).map((p) => p[key][0]);
      const highs = series.filter((p) => p[key]).map((p) => p[key][1]);
      if (lows.length) values.push(median(lows), median(highs));
    }
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const padding = Math.max((hi - lo) * 0.08, 0.05);
    lo = Math.max(0, lo - padding);
    hi += padding;
    const plotH = H - M.top - M.bottom;
    const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * plotH;
    const clipId = `plot-clip-${++clipCounter}`;
    const parts = [`<defs><clipPath id="${clipId}"><rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${plotH}"/></clipPath></defs>`];

    for (const t of niceTicks(lo, hi, 4)) {
      parts.push(`<line class="grid" x1="${M.left}" x2="${W - M.right}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}"/>`);
      parts.push(`<text class="tick" x="${M.left - 4}" y="${(y(t) + 3).toFixed(1)}" text-anchor="end">${fmtRatio(t)}</text>`);
    }
    for (const tick of timeTicks(domain)) {
      const anchor = tick.t === domain[0] ? "start" : (tick.t === domain[1] ? "end" : "middle");
      parts.push(`<text class="tick" x="${x(tick.t).toFixed(1)}" y="${H - 6}" text-anchor="${anchor}">${esc(tick.label)}</text>`);
    }

    const plot = [];
    const smooth = stride(series, MAX_POINTS);
    // human band: an area through each window's band (bands depend on the window's size)
    plot.push(areaSvg(smooth, (p) => p.band, x, y, "band", "human band"));
    plot.push(areaSvg(smooth, (p) => p.baselineBand, x, y, "baseline-band", "baseline band"));
    plot.push(`<line class="human-mean" x1="${M.left}" x2="${W - M.right}" y1="${y(1).toFixed(1)}" y2="${y(1).toFixed(1)}"><title>human mean (1.0)</title></line>`);

    const withBaseline = smooth.filter((p) => isNum(p.baselineLevel));
    if (withBaseline.length) {
      const pts = withBaseline.length === 1
        ? [`${M.left},${y(withBaseline[0].baselineLevel).toFixed(1)}`,
          `${W - M.right},${y(withBaseline[0].baselineLevel).toFixed(1)}`]
        : withBaseline.map((p) => `${x(p.x).toFixed(1)},${y(p.baselineLevel).toFixed(1)}`);
      plot.push(`<polyline class="baseline-line" points="${pts.join(" ")}"><title>the model's baseline, as a ratio to human</title></polyline>`);
    }

    const shown = lttb(series, MAX_POINTS);
    if (shown.length > 1) {
      plot.push(`<polyline class="ratio-line" points="${shown.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")}"/>`);
    }
    parts.push(`<g clip-path="url(#${clipId})">${plot.join("")}</g>`);
    // points stay visible even when far outside the typical range
    for (const p of shown) {
      const cls = `pt${p.outside ? " outside" : ""}`;
      parts.push(`<circle class="${cls}" cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="${shown.length > 80 ? 1.8 : 2.6}" data-ratio="${p.y}"><title>${esc(pointTitle(p, signal))}</title></circle>`);
    }
    return `<svg class="chart-svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(SIGNAL_LABEL[signal])} ratio over time" data-signal="${signal}" data-points="${shown.length}">${parts.join("")}</svg>`;
  }

  function timelineSvg(evaluations, domain) {
    const TW = W * 3;
    const x = xScale(domain, TW);
    // consecutive windows in the same state become one segment over their samples' time
    const runs = [];
    for (const e of evaluations) {
      const [start, end] = windowSpan(e);
      if (end == null) continue;
      const h = HEALTH_LABEL[e.health] ? e.health : "insufficient_data";
      const last = runs[runs.length - 1];
      if (last && last.health === h) {
        last.end = end;
        last.count += 1;
      } else {
        runs.push({ health: h, start, end, count: 1 });
      }
    }
    const TH = 34;
    const parts = [];
    runs.forEach((r) => {
      const x0 = x(r.start);
      const width = Math.max(3, x(r.end) - x0);
      const label = `${HEALTH_LABEL[r.health]}: ${r.count} window${r.count === 1 ? "" : "s"}, ` +
        `${fmtDate(r.start)}${r.count > 1 ? ` – ${fmtClock(r.end)}` : ""}`;
      parts.push(`<rect class="seg h-${r.health}" data-health="${r.health}" x="${x0.toFixed(1)}" y="4" width="${width.toFixed(1)}" height="14"><title>${esc(label)}</title></rect>`);
    });
    for (const tick of timeTicks(domain)) {
      const anchor = tick.t === domain[0] ? "start" : (tick.t === domain[1] ? "end" : "middle");
      parts.push(`<text class="tick" x="${x(tick.t).toFixed(1)}" y="${TH - 4}" text-anchor="${anchor}">${esc(tick.label)}</text>`);
    }
    parts.push(`<text class="tick" x="${M.left - 4}" y="15" text-anchor="end">health</text>`);
    return `<svg class="timeline-svg" viewBox="0 0 ${TW} ${TH}" role="img" aria-label="health over time">${parts.join("")}</svg>`;
  }

  function metricsTable(e) {
    const metrics = Object.entries(e.metrics || {});
    if (!metrics.length) return '<p class="muted">The latest window has no metric values.</p>';
    const order = (m) => {
      const i = SIGNALS.indexOf(m.signal);
      return i < 0 ? SIGNALS.length : i;
    };
    metrics.sort((a, b) => (order(a[1]) - order(b[1])) || a[0].localeCompare(b[0]));
    const hasBaseline = metrics.some(([, m]) => isNum(m.baseline_ratio));
    const rows = metrics.map(([name, m]) => {
      const outside = typeof m.outside_band === "boolean" ? m.outside_band
        : (isNum(m.value) && isNum(m.human_low) && isNum(m.human_high) &&
          (m.value < m.human_low || m.value > m.human_high));
      const outsideBaseline = Boolean(m.outside_baseline_band);
      return `<tr class="${outside ? "outside" : ""}" data-metric="${esc(name)}">
        <td>${esc(name)}</td>
        <td class="muted">${esc(m.signal ? String(m.signal).replace(/_/g, " ") : "")}</td>
        <td class="num">${fmtValue(m.value)}</td>
        <td class="num">${fmtValue(m.human_low)} – ${fmtValue(m.human_high)}</td>
        <td class="num">${fmtRatio(m.ratio)}</td>
        ${hasBaseline ? `<td class="num">${fmtRatio(m.baseline_ratio)}${outsideBaseline ? ' <span class="flag" title="outside the baseline band">◆</span>' : ""}</td>` : ""}
        <td class="mark">${outside ? '<span class="flag" title="outside the human band">● outside</span>' : ""}</td>
      </tr>`;
    }).join("");
    return `<table class="metrics"><thead><tr><th>Metric</th><th>Signal</th><th class="num">Value</th>
      <th class="num">Human band</th><th class="num">Ratio to human</th>
      ${hasBaseline ? '<th class="num">Ratio to baseline <span class="flag-key">(◆ outside its band)</span></th>' : ""}<th></th></tr></thead>
      <tbody>${rows}</tbody></table>`;
  }

  function latestHtml(e) {
    const t0 = parseTime(e.window_start);
    const t1 = parseTime(e.window_end);
    const bits = [
      `${fmtInt(e.documents)} documents`,
      `${fmtInt(e.tokens)} tokens`,
      t0 != null && t1 != null ? `window ${fmtDate(t0)} – ${fmtClock(t1)}` : null,
      e.baseline && e.baseline.name ? `baseline ${esc(e.baseline.name)}` : null,
    ].filter(Boolean);
    return `<p class="meta">Latest window: ${healthBadge(e.health)} ${bits.join(" · ")}</p>`;
  }

  function renderCardBody(card) {
    const body = card.el.querySelector(".card-body");
    card.el.classList.add("loaded");
    if (card.error) {
      body.innerHTML = `<p class="error-line">Could not load evaluations: ${esc(card.error)}</p>`;
      return;
    }
    const evaluations = card.evaluations || [];
    const view = state.models.find((v) => v.name === card.name);
    if (!evaluations.length) {
      const size = view && view.windowSize ? `${fmtInt(view.windowSize)} samples` : "a full window";
      body.innerHTML = `<p class="muted placeholder">No evaluation yet: a window is scored once it
        has ${size} (${fmtInt(view && view.samples)} ingested so far).</p>`;
      return;
    }
    const domain = timeDomain(evaluations);
    const latest = evaluations[evaluations.length - 1];
    const charts = SIGNALS.map((signal) => {
      const series = seriesFor(evaluations, signal);
      const current = (latest.signals || {})[signal] || {};
      const now = isNum(current.ratio)
        ? `<span class="now${current.outside_band ? " outside" : ""}">${fmtRatio(current.ratio)}×</span>`
        : '<span class="now muted">–</span>';
      const svg = series.length && domain
        ? chartSvg(signal, series, domain)
        : '<p class="muted placeholder">no values yet</p>';
      return `<figure class="chart" data-signal="${signal}">
        <figcaption><span class="sig">${esc(SIGNAL_LABEL[signal])}</span>
          <span class="hint">${esc(SIGNAL_HINT[signal])}</span>${now}</figcaption>
        ${svg}
      </figure>`;
    }).join("");
    const more = WINDOW_CHOICES.some((n) => n > card.windows);
    const truncated = evaluations.length >= card.windows
      ? ` (the last ${fmtInt(card.windows)}${more ? "; choose more above" : ""})` : "";
    const hasBaseline = evaluations.some((e) => SIGNALS.some((sig) =>
      isNum(((e.signals || {})[sig] || {}).baseline_ratio)));
    body.innerHTML = `
      <div class="charts">${charts}</div>
      <div class="legend"><span class="lg ratio"></span>ratio to human
        <span class="lg band"></span>human band <span class="lg mean"></span>human mean
        ${hasBaseline ? '<span class="lg base"></span>baseline level <span class="lg baseband"></span>baseline band' : ""}
        <span class="lg out"></span>outside band
        <span class="muted">· ${fmtInt(evaluations.length)} windows${truncated}</span></div>
      <div class="timeline">${domain ? timelineSvg(evaluations, domain) : ""}</div>
      ${latestHtml(latest)}
      ${metricsTable(latest)}`;
  }

  function onVisibility(entries) {
    for (const entry of entries) {
      const card = state.cards.get(entry.target.dataset.model);
      if (!card) continue;
      card.visible = entry.isIntersecting;
      if (card.visible && (card.stale || !card.evaluations)) loadCard(card);
    }
  }

  // --------------------------------------------------------------- refresh

  async function refresh() {
    clearTimeout(state.refreshTimer);
    let delay = document.hidden ? REFRESH_MS * 3 : REFRESH_MS;
    try {
      await Promise.all([loadModels(), loadAlerts()]);
      showError(null);
      renderAlerts();
      renderFleet();
      ensureCards();
      for (const card of state.cards.values()) {
        card.stale = true;
        if (card.visible) loadCard(card);
      }
      if (state.models.some((v) => !v.hasHealthInList)) {
        await loadHealthForList();
        buildViews();
        renderFleet();
        ensureCards();
      }
      $("#refreshed").textContent = `updated ${fmtClock(Date.now())}`;
    } catch (exc) {
      if (exc.status === 401) {
        const refused = Boolean(state.key);
        if (refused) {
          forgetKey();
          delay = 100; // reads may be open to anyone without a key: try again at once
        }
        showError(refused ? "The saved API key was refused; it has been forgotten."
          : "This server needs an API key to read (COLLAPSEWATCH_REQUIRE_READ_KEY). " +
            "Enter a key with read scope or higher.");
        if ($("#key-form").hidden) openKeyForm("");
      } else {
        showError(`Could not refresh: ${exc.message}. Retrying in ${REFRESH_MS / 1000} s.`);
      }
    }
    state.refreshTimer = setTimeout(refresh, delay);
  }

  function setupEvents() {
    document.addEventListener("click", (event) => {
      const ack = event.target.closest("button.ack");
      if (ack) {
        acknowledge(ack.dataset.alertId);
      }
    });
    document.addEventListener("change", (event) => {
      const select = event.target.closest("select.window-count");
      if (!select) return;
      const card = state.cards.get(select.closest("article.card").dataset.model);
      if (!card) return;
      card.windows = Number(select.value) || DEFAULT_WINDOWS;
      card.stale = true;
      loadCard(card);
    });
  }

  function start() {
    state.observer = new IntersectionObserver(onVisibility, { rootMargin: "200px 0px" });
    setupKeyForm();
    setupEvents();
    refresh();
  }

  start();
})();
