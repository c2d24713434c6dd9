// One card per model: head, charts, latest window; loaded when scrolled into view.
import { api, listOf } from "./api.js";
import { chartSvg, seriesFor, timeDomain, timelineSvg, trendSvg } from "./charts.js";
import { linkedWindow, showEvidence } from "./evidence.js";
import { referenceHtml } from "./fleet.js";
import { shareFigure, showsShare } from "./share.js";
import { esc, fmtClock, fmtDate, fmtInt, fmtRatio, fmtValue, healthBadge, isNum, parseTime, shortSha, timeHtml } from "./format.js";
import { $, DEFAULT_WINDOWS, SEMANTIC_METRICS, SIGNALS, SIGNAL_HINT, SIGNAL_LABEL, WINDOW_CHOICES, state } from "./state.js";

// ----------------------------------------------------------------- cards

export function cardId(name) {
  return `model-${name}`;
}

export function ensureCards() {
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
        stale: true, visible: false, error: null, selectedId: null, evidence: null };
      // a card opened from an alert's link shows the window the alert fired on
      const link = linkedWindow();
      if (link && link.model === v.name) card.selectedId = link.evaluation;
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

export function baselineHtml(v) {
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
export function renderCardHead(card, v) {
  const head = card.el.querySelector(".head-info");
  head.innerHTML = `
    <div class="title-row">
      <h3>${esc(v.name)}</h3>
      ${v.demo ? '<span class="tag demo">demo</span>' : ""}
      ${v.kind === "stream" ? '<span class="tag stream" title="a data stream: its synthetic share is estimated">stream</span>' : ""}
      ${healthBadge(v.health)}
    </div>
    ${v.description ? `<p class="desc">${esc(v.description)}</p>` : ""}
    <p class="meta">reference ${referenceHtml(v)} · ${baselineHtml(v)}
      · ${v.windowSize ? `window ${fmtInt(v.windowSize)} samples · ` : ""}<span class="ingested">${fmtInt(v.samples)}</span> samples ingested
      · last evaluation ${timeHtml(v.lastEval)}</p>`;
}

export async function loadCard(card) {
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
export function metricsTable(e) {
  const metrics = Object.entries(e.metrics || {});
  if (!metrics.length) return '<p class="muted">The latest window has no metric values.</p>';
  const order = (m) => {
    const i = SIGNALS.indexOf(m.signal);
    return i < 0 ? SIGNALS.length : i;
  };
  metrics.sort((a, b) => (order(a[1]) - order(b[1])) || a[0].localeCompare(b[0]));
  const hasBaseline = metrics.some(([, m]) => isNum(m.baseline_ratio));
  const row = ([name, m]) => {
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
  };
  // the embedding model's metrics are a group of their own: they need a model file the
  // worker may not have, and then the Score JSON says why instead of giving values
  const isSemantic = ([name]) => SEMANTIC_METRICS.includes(name);
  const lexical = metrics.filter((m) => !isSemantic(m));
  const semantic = metrics.filter(isSemantic);
  const columns = hasBaseline ? 7 : 6;
  const unavailable = typeof e.semantic === "string" ? e.semantic : null;
  let semanticBody = "";
  if (unavailable) {
    semanticBody = `<tbody class="semantic"><tr class="group semantic-unavailable"><td colspan="${columns}">
      semantic: ${esc(unavailable.replace(/^semantic:\s*/, ""))}</td></tr></tbody>`;
  } else if (semantic.length) {
    semanticBody = `<tbody class="semantic"><tr class="group"><td colspan="${columns}">Semantic
      <span class="muted">(embedding model: meaning and topics, not words)</span></td></tr>
      ${semantic.map(row).join("")}</tbody>`;
  }
  return `<table class="metrics"><thead><tr><th>Metric</th><th>Signal</th><th class="num">Value</th>
    <th class="num">Human band</th><th class="num">Ratio to human</th>
    ${hasBaseline ? '<th class="num">Ratio to baseline <span class="flag-key">(◆ outside its band)</span></th>' : ""}<th></th></tr></thead>
    <tbody class="lexical">${lexical.map(row).join("")}</tbody>${semanticBody}</table>`;
}

export function latestHtml(e) {
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

export function renderCardBody(card) {
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
    // a sustained shift (the sequential detector's alarm) since which window
    const trend = ((latest.trend || {})[signal]) || {};
    const badge = trend.alarm
      ? `<span class="badge trend-alarm" title="${esc(trendText(trend))}">sustained decline since window ${esc(String(trend.since_window))}</span>`
      : "";
    return `<figure class="chart" data-signal="${signal}">
      <figcaption><span class="sig">${esc(SIGNAL_LABEL[signal])}</span>
        <span class="hint">${esc(SIGNAL_HINT[signal])}</span>${badge}${now}</figcaption>
      ${svg}
      ${domain ? trendSvg(signal, evaluations, domain) : ""}
    </figure>`;
  }).join("");
  const more = WINDOW_CHOICES.some((n) => n > card.windows);
  const truncated = evaluations.length >= card.windows
    ? ` (the last ${fmtInt(card.windows)}${more ? "; choose more above" : ""})` : "";
  const hasBaseline = evaluations.some((e) => SIGNALS.some((sig) =>
    isNum(((e.signals || {})[sig] || {}).baseline_ratio)));
  body.innerHTML = `
    <div class="charts">${charts}</div>
    ${showsShare(view, evaluations) ? `<div class="share-row">${shareFigure(view, evaluations, domain)}</div>` : ""}
    <div class="legend"><span class="lg ratio"></span>ratio to human
      <span class="lg band"></span>human band <span class="lg mean"></span>human mean
      ${hasBaseline ? '<span class="lg base"></span>baseline level <span class="lg baseband"></span>baseline band' : ""}
      <span class="lg out"></span>outside band
      <span class="muted">· ${fmtInt(evaluations.length)} windows${truncated}</span></div>
    <div class="timeline">${domain ? timelineSvg(evaluations, domain) : ""}</div>
    ${latestHtml(latest)}
    <div class="evidence-slot"></div>
    ${metricsTable(latest)}`;
  showEvidence(card);
}

function trendText(t) {
  const pct = isNum(t.shift_estimate) ? Math.abs(t.shift_estimate * 100).toFixed(0) : "?";
  const way = isNum(t.shift_estimate) && t.shift_estimate > 0 ? "above" : "below";
  return `~${pct}% ${way} ${t.against || "band"} for ${t.windows} windows`;
}

export function onVisibility(entries) {
  for (const entry of entries) {
    const card = state.cards.get(entry.target.dataset.model);
    if (!card) continue;
    card.visible = entry.isIntersecting;
    if (card.visible && (card.stale || !card.evaluations)) loadCard(card);
  }
}
