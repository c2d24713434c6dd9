// Formatting: numbers, times, badges; every string that reaches innerHTML goes through esc().
import { HEALTH_LABEL } from "./state.js";

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

export function fmtRatio(v) {
  return isNum(v) ? v.toFixed(2) : "–";
}

export function fmtValue(v) {
  if (!isNum(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(1);
  if (a === 0) return "0";
  if (a < 0.001) return v.toExponential(2);
  return v.toPrecision(3);
}

export function fmtInt(v) {
  return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–";
}

export function parseTime(s) {
  if (!s) return null;
  // timestamps are UTC; one without a zone designator must not be read as local time
  const text = String(s);
  const t = Date.parse(/T[\d:.]+$/.test(text) ? `${text}Z` : text);
  return Number.isNaN(t) ? null : t;
}

export function pad2(n) {
  return String(n).padStart(2, "0");
}

export function fmtClock(t) {
  const d = new Date(t);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function fmtDate(t) {
  const d = new Date(t);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(t)}`;
}

export function fmtAgo(t) {
  if (t == null) return "never";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function timeHtml(t) {
  if (t == null) return '<span class="muted">never</span>';
  return `<time datetime="${esc(new Date(t).toISOString())}" title="${esc(fmtDate(t))}">` +
    `${esc(fmtAgo(t))}</time>`;
}

export function shortSha(sha) {
  return sha ? String(sha).slice(0, 12) : "–";
}

export function isDemo(model) {
  return /^demo-/.test(model.name) || /^demo\b/i.test(model.description || "");
}

export function healthBadge(health) {
  if (health == null) return '<span class="badge h-unknown" data-health="">…</span>';
  const h = HEALTH_LABEL[health] ? health : "insufficient_data";
  return `<span class="badge h-${h}" data-health="${h}">${esc(HEALTH_LABEL[h])}</span>`;
}
