// A stream's synthetic share over windows: the estimate with its 95% interval, the stream's
// guard (max_synthetic_share) and, for the latest window, the split by source
// (Score JSON "synthetic_share", docs/synthetic-share.md).
import { H, M, W, areaSvg, evalTime, niceTicks, stride, timeTicks, xScale } from "./charts.js";
import { esc, fmtDate, isNum } from "./format.js";
import { MAX_POINTS } from "./state.js";

const pct = (v) => (isNum(v) ? `${(100 * v).toFixed(v > 0 && v < 0.1 ? 1 : 0)}%` : "–");

export function shareSeries(evaluations) {
  const out = [];
  for (const e of evaluations) {
    const s = e.synthetic_share;
    const t = evalTime(e);
    if (!s || !isNum(s.estimate) || t == null) continue;
    out.push({ x: t, y: s.estimate, band: isNum(s.low) && isNum(s.high) ? [s.low, s.high] : null,
      id: e.id });
  }
  return out;
}

// True when the page should draw the share: a stream, or windows that carry it.
export function showsShare(view, evaluations) {
  return Boolean((view && view.kind === "stream") ||
    evaluations.some((e) => e.synthetic_share || e.synthetic_share_unavailable));
}

export function shareSvg(series, domain, guard) {
  const x = xScale(domain);
  // shares are 0..1; the scale covers the data, its intervals and the guard, not always 0..1,
  // so that a 2% share with a 1-4% interval stays readable
  let hi = Math.max(0.05, ...series.map((p) => (p.band ? p.band[1] : p.y)), isNum(guard) ? guard : 0);
  hi = Math.min(1, hi * 1.15);
  const plotH = H - M.top - M.bottom;
  const y = (v) => M.top + (1 - Math.max(0, Math.min(v, hi)) / hi) * plotH;
  const parts = [];
  for (const t of niceTicks(0, hi, 4)) {
    parts.push(`<line class="grid" x1="${M.left}" x2="${W - M.right}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}"/>`);
    parts.push(`<text class="tick" x="${M.left - 4}" y="${(y(t) + 3).toFixed(1)}" text-anchor="end">${esc(pct(t))}</text>`);
  }
  for (const tick of timeTicks(domain)) {
    const anchor = tick.t === domain[0] ? "start" : (tick.t === domain[1] ? "end" : "middle");
    parts.push(`<text class="tick" x="${x(tick.t).toFixed(1)}" y="${H - 6}" text-anchor="${anchor}">${esc(tick.label)}</text>`);
  }
  const smooth = stride(series, MAX_POINTS);
  parts.push(areaSvg(smooth, (p) => p.band, x, y, "share-band", "95% interval"));
  if (isNum(guard)) {
    parts.push(`<line class="share-guard" x1="${M.left}" x2="${W - M.right}" y1="${y(guard).toFixed(1)}" y2="${y(guard).toFixed(1)}"><title>the stream's max_synthetic_share ${esc(pct(guard))}: an alert when the interval's lower bound is above it</title></line>`);
  }
  if (smooth.length > 1) {
    parts.push(`<polyline class="share-line" points="${smooth.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")}"/>`);
  }
  for (const p of smooth) {
    const over = isNum(guard) && p.band && p.band[0] > guard;
    const title = `synthetic share ${pct(p.y)}${p.band ? ` (95% ${pct(p.band[0])}–${pct(p.band[1])})` : ""}` +
      `${over ? "\nabove the guard" : ""}\n${fmtDate(p.x)}`;
    parts.push(`<circle class="share-pt${over ? " over" : ""}" cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="${smooth.length > 80 ? 1.8 : 2.6}" data-share="${p.y}" data-evaluation-id="${esc(p.id)}"><title>${esc(title)}</title></circle>`);
  }
  return `<svg class="share-svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="synthetic share over time" data-points="${smooth.length}">${parts.join("")}</svg>`;
}

// A joined share's two estimators (scores "joined"): the LM ratio over every document and
// with the embedding score; the joined interval spans both, so a wide one shows which
// estimator disagrees.
const ESTIMATORS = { lexical: "LM ratio", "lexical+semantic": "with embeddings" };

function estimators(parts) {
  if (!parts || typeof parts !== "object") return "";
  const items = Object.entries(parts).filter(([, v]) => v && isNum(v.estimate)).map(([k, v]) =>
    `<span class="estimator" data-scores="${esc(k)}">${esc(ESTIMATORS[k] || k)} ${esc(pct(v.estimate))}` +
    `${isNum(v.low) && isNum(v.high) ? ` (${esc(pct(v.low))}–${esc(pct(v.high))})` : ""}` +
    `${isNum(v.documents) ? `, ${esc(v.documents)} documents` : ""}</span>`);
  return items.length ? `<p class="muted share-parts" title="the estimate is their midpoint, its interval spans both">${items.join(" · ")}</p>` : "";
}

// The figure under a stream's charts (HTML; every value through esc()).
export function shareFigure(view, evaluations, domain) {
  const latest = evaluations[evaluations.length - 1] || {};
  const guard = view && isNum(view.maxSyntheticShare) ? view.maxSyntheticShare : null;
  const series = shareSeries(evaluations);
  const s = latest.synthetic_share;
  let now = '<span class="now muted">–</span>';
  let sources = "";
  if (s && isNum(s.estimate)) {
    const over = guard != null && isNum(s.low) && s.low > guard;
    now = `<span class="now${over ? " outside" : ""}">${esc(pct(s.estimate))}` +
      `${isNum(s.low) && isNum(s.high) ? ` <span class="ci">(95% ${esc(pct(s.low))}–${esc(pct(s.high))})</span>` : ""}</span>`;
    const parts = Object.entries(s.by_source || {}).map(([name, v]) =>
      `<span class="chip source" data-source="${esc(name)}">${esc(name)} ${esc(pct(v && v.estimate))}` +
      `${v && isNum(v.low) && isNum(v.high) ? ` (${esc(pct(v.low))}–${esc(pct(v.high))})` : ""}</span>`);
    if (isNum(s.unexplained) && s.unexplained > 0) {
      parts.push(`<span class="chip unexplained" title="fits neither the human reference nor a source">unexplained ${esc(pct(s.unexplained))}</span>`);
    }
    sources = parts.length ? `<p class="chips share-sources">${parts.join("")}</p>` : "";
    sources += estimators(s.parts);
  }
  const unavailable = latest.synthetic_share_unavailable
    ? `<p class="muted share-unavailable">synthetic share: unavailable (${esc(latest.synthetic_share_unavailable)})</p>` : "";
  const svg = series.length && domain ? shareSvg(series, domain, guard)
    : '<p class="muted placeholder">no estimate yet</p>';
  return `<figure class="chart share" data-signal="synthetic_share">
    <figcaption><span class="sig">Synthetic share</span>
      <span class="hint">written by the stream's sources${guard != null ? `; guard ${esc(pct(guard))}` : ""}</span>${now}</figcaption>
    ${svg}${sources}${unavailable}
  </figure>`;
}
