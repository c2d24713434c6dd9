// SVG charts drawn by hand: signal ratios with bands, the window timeline.
import { esc, fmtClock, fmtDate, fmtRatio, isNum, pad2, parseTime } from "./format.js";
import { HEALTH_LABEL, MAX_POINTS, SIGNAL_LABEL } from "./state.js";

export function evalTime(e) {
  return parseTime(e.window_end) ?? parseTime(e.created_at) ?? parseTime(e.window_start);
}

// A signal's band as [low, high], or null: the Score JSON gives the human band of each
// signal in ratio units (1.0 = human mean) and the baseline band in baseline-ratio units.
export function bandOf(s, lowKey, highKey) {
  return isNum(s[lowKey]) && isNum(s[highKey]) ? [s[lowKey], s[highKey]] : null;
}

export function seriesFor(evaluations, signal) {
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
export function lttb(points, threshold) {
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

export function niceTicks(lo, hi, count) {
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

export const W = 400;
export const H = 170;
export const M = { left: 38, right: 8, top: 8, bottom: 22 };

export function xScale(domain, width = W) {
  const [x0, x1] = domain;
  const span = x1 - x0 || 1;
  return (x) => M.left + ((x - x0) / span) * (width - M.left - M.right);
}

// [first sample time, last sample time] of a window (its end alone when the start is unknown)
export function windowSpan(e) {
  const end = evalTime(e);
  const start = parseTime(e.window_start);
  return [start != null && end != null && start <= end ? start : end, end];
}

export function timeDomain(evaluations) {
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

export function timeTicks(domain) {
  const [lo, hi] = domain;
  const longRange = hi - lo > 36 * 3600 * 1000;
  const label = (t) => {
    const d = new Date(t);
    return longRange ? `${d.getMonth() + 1}/${d.getDate()} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`
      : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  };
  return [lo, (lo + hi) / 2, hi].map((t) => ({ t, label: label(t) }));
}

export function pointTitle(p, signal) {
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

export function median(xs) {
  const sorted = xs.slice().sort((p, q) => p - q);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
}

// Every k-th point (and the last) so smooth lines stay under `limit` vertices.
export function stride(points, limit) {
  if (points.length <= limit) return points;
  const k = Math.ceil(points.length / limit);
  const out = points.filter((_, i) => i % k === 0);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

// An area between two bounds over time: a rectangle for one window, else a polygon.
export function areaSvg(points, bounds, x, y, cls, title) {
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

export function chartSvg(signal, series, domain) {
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
    parts.push(`<circle class="${cls}" cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="${shown.length > 80 ? 1.8 : 2.6}" data-ratio="${p.y}" data-evaluation-id="${esc(p.id)}"><title>${esc(pointTitle(p, signal))}</title></circle>`);
  }
  return `<svg class="chart-svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(SIGNAL_LABEL[signal])} ratio over time" data-signal="${signal}" data-points="${shown.length}">${parts.join("")}</svg>`;
}

export function timelineSvg(evaluations, domain) {
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

// The sequential (CUSUM) statistic of one signal per window, under its chart, with the
// threshold above which a sustained shift alarms (docs/early-warning.md).
export function trendSvg(signal, evaluations, domain) {
  const pts = [];
  let threshold = null;
  for (const e of evaluations) {
    const s = ((e.trend || {})[signal]) || null;
    const t = evalTime(e);
    if (!s || !isNum(s.statistic) || t == null) continue;
    if (isNum(s.threshold)) threshold = s.threshold;
    pts.push({ x: t, y: s.statistic, alarm: Boolean(s.alarm) });
  }
  if (!pts.length || threshold == null) return "";
  const TH = 36;
  const x = xScale(domain);
  const hi = Math.max(threshold * 1.25, ...pts.map((p) => p.y));
  const y = (v) => 4 + (1 - Math.min(v, hi) / hi) * (TH - 8);
  const parts = [`<line class="trend-threshold" x1="${M.left}" x2="${W - M.right}" y1="${y(threshold).toFixed(1)}" y2="${y(threshold).toFixed(1)}"><title>alarm above ${threshold}</title></line>`];
  const shown = stride(pts, MAX_POINTS);
  if (shown.length > 1) {
    parts.push(`<polyline class="trend-line" points="${shown.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")}"/>`);
  }
  for (const p of shown.filter((q) => q.alarm)) {
    parts.push(`<circle class="trend-alarm-pt" cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="1.8"/>`);
  }
  parts.push(`<text class="tick" x="${M.left - 4}" y="${(y(threshold) + 3).toFixed(1)}" text-anchor="end">trend</text>`);
  return `<svg class="trend-svg" viewBox="0 0 ${W} ${TH}" role="img" aria-label="${esc(SIGNAL_LABEL[signal])} sequential statistic" data-signal="${signal}">${parts.join("")}</svg>`;
}
