// The "What changed" panel of a model card: one window's evidence (metrics/evidence.py) from
// GET /models/{name}/evaluations/{id}: phrases that took over, words and topics that
// vanished, near-duplicate groups, (a)typical documents.
// Sample text is untrusted: this module builds DOM nodes and sets textContent only.
import { api } from "./api.js";
import { fmtValue, isNum } from "./format.js";
import { VANISHED_WINDOWS, state } from "./state.js";

// el("p", { class: "x", title: "..." }, "text", child, ...): attributes and text, never markup.
// `style` is an object set through the CSSOM: the page's CSP (style-src 'self') blocks
// inline style attributes, not CSSOM properties.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "style") {
      Object.assign(node.style, value);
      continue;
    }
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const list = (v) => (Array.isArray(v) ? v : []);
// occurrences per 10k tokens: whole numbers from 10 up, one decimal below
const rate = (v) => (isNum(v) ? (Math.abs(v) >= 10 ? String(Math.round(v)) : v.toFixed(1)) : "–");

// Quoted text (duplicate examples, typical documents) is served to key holders only, and to
// nobody when the server stores none (COLLAPSEWATCH_EVIDENCE_TEXT=off): the lists are then
// present but empty.
export function quotedTextWithheld(evidence) {
  const groups = list(evidence.duplicates);
  const ex = evidence.examples || {};
  const noExamples = !list(ex.most_typical).length && !list(ex.least_typical).length;
  return groups.some((g) => (g.size || 0) > 0 && !list(g.examples).length) ||
    (noExamples && (groups.length > 0 || list(evidence.overrepresented).length > 0 ||
      list(evidence.vanished).length > 0));
}

function withheldNote() {
  const why = state.key
    ? "this server does not show or store quoted sample text (COLLAPSEWATCH_EVIDENCE_TEXT=off)"
    : "quoted sample text needs an API key (any scope): set one with the API key button";
  return el("p", { class: "muted small quoted-withheld" }, `Examples not shown: ${why}.`);
}

function phrasesBlock(items) {
  const block = el("div", { class: "ev-block ev-phrases" },
    el("h4", {}, "Phrases that took over"));
  if (!items.length) {
    block.append(el("p", { class: "muted small" }, "No phrase is significantly more frequent."));
    return block;
  }
  const max = Math.max(...items.map((p) => Math.max(p.window_per_10k || 0, p.baseline_per_10k || 0)), 1e-9);
  const pct = (v) => `${Math.max(0, Math.min(100, (100 * (v || 0)) / max)).toFixed(1)}%`;
  const rows = items.map((p, i) => el("li", { class: "phrase", "data-rank": i + 1 },
    el("span", { class: "ngram" }, p.ngram),
    el("span", { class: "bars" },
      el("span", { class: "bar now", style: { width: pct(p.window_per_10k) },
        title: `now ${rate(p.window_per_10k)} per 10k tokens` }),
      el("span", { class: "bar before", style: { width: pct(p.baseline_per_10k) },
        title: `before ${rate(p.baseline_per_10k)} per 10k tokens` })),
    el("span", { class: "rate num" },
      `${rate(p.window_per_10k)} vs ${rate(p.baseline_per_10k)}`),
    el("span", { class: "z num muted", title: "adjusted z (Benjamini–Hochberg)" },
      isNum(p.z) ? `z ${p.z.toFixed(1)}` : "")));
  block.append(el("ol", { class: "phrase-list" }, rows),
    el("p", { class: "muted small legend-line" },
      el("span", { class: "bar now key" }), " now ", el("span", { class: "bar before key" }),
      " before, per 10k tokens"));
  return block;
}

function chip(text, cls, title) {
  return el("span", { class: `chip ${cls}`, title }, text);
}

function vanishedBlock(items, persistent) {
  const block = el("div", { class: "ev-block ev-vanished" }, el("h4", {}, "Vanished words"));
  const terms = persistent && Array.isArray(persistent.terms) ? persistent.terms : null;
  if (terms && terms.length) {
    block.append(el("p", { class: "gone-for" },
      el("strong", {}, `gone for ${persistent.windows} windows: `),
      terms.map((t) => chip(t.term, "persistent",
        `expected in ${fmtValue(t.expected)} documents of this window, seen in ${t.observed ?? 0}`))));
  }
  if (!items.length) {
    block.append(el("p", { class: "muted small" }, "No word the background used is missing."));
    return block;
  }
  const persistentSet = new Set((terms || []).map((t) => t.term));
  const recent = items.filter((t) => !persistentSet.has(t.term));
  if (recent.length) {
    block.append(el("p", { class: "chips recent" },
      persistentSet.size ? el("span", { class: "muted small" }, "in this window also: ") : null,
      recent.map((t) => chip(t.term, "vanished",
        `expected in ${fmtValue(t.expected)} documents, seen in ${t.observed ?? 0}`))));
  }
  return block;
}

function topicsBlock(items) {
  if (!items.length) return null;
  return el("div", { class: "ev-block ev-topics" }, el("h4", {}, "Vanished topics"),
    el("p", { class: "chips" }, items.map((t) => {
      const share = isNum(t.baseline_share) ? t.baseline_share : t.reference_share;
      const label = isNum(share) ? `${t.topic} (${(100 * share).toFixed(1)}%)` : t.topic;
      return chip(label, "topic", `expected ${fmtValue(t.expected)} documents, seen ${t.observed ?? 0}`);
    })));
}

function duplicatesBlock(groups) {
  const block = el("div", { class: "ev-block ev-duplicates" }, el("h4", {}, "Near-duplicate groups"));
  if (!groups.length) {
    block.append(el("p", { class: "muted small" }, "No near-duplicate group."));
    return block;
  }
  for (const g of groups) {
    const share = isNum(g.share) ? ` (${(100 * g.share).toFixed(1)}% of the window)` : "";
    const examples = list(g.examples);
    block.append(el("details", { class: "dup-group", "data-size": g.size },
      el("summary", {}, `${g.size} near-identical documents${share}`),
      examples.length
        ? examples.map((t) => el("blockquote", { class: "quote" }, t))
        : el("p", { class: "muted small" }, "examples not shown")));
  }
  return block;
}

function examplesBlock(examples) {
  const most = list(examples && examples.most_typical);
  const least = list(examples && examples.least_typical);
  if (!most.length && !least.length) return null;
  const one = (title, items) => el("div", {}, el("h5", {}, title),
    items.map((d) => el("blockquote", { class: "quote", title: isNum(d.nll) ? `NLL ${d.nll} per token` : null }, d.text)));
  return el("details", { class: "ev-block ev-examples" },
    el("summary", {}, "Most and least typical documents (reference language model)"),
    one("most typical", most), one("least typical", least));
}

// The panel for one evaluation body (the REST detail of a window).
export function evidencePanel(body, { latest = true } = {}) {
  const evidence = body && typeof body.evidence === "object" && body.evidence ? body.evidence : null;
  const against = evidence && evidence.against === "baseline" ? "the baseline" : "the reference";
  const head = el("header", { class: "ev-head" }, el("h4", { class: "ev-title" }, "What changed"),
    el("span", { class: "muted small" },
      `window ${body.window_index ?? body.id}${latest ? " (latest)" : ""}, against ${against}`));
  if (!latest) {
    head.append(el("button", { type: "button", class: "ghost small ev-latest" }, "show latest"));
  }
  const panel = el("section", { class: latest ? "evidence" : "evidence selected-window",
    "data-evaluation-id": body.id, "data-window-index": body.window_index }, head);
  if (!evidence || !Object.keys(evidence).some((k) => k !== "vanished_topics")) {
    panel.append(el("p", { class: "muted ev-none" },
      "No evidence is stored for this window (it was scored without it)."));
    const topics = topicsBlock(list(evidence && evidence.vanished_topics));
    if (topics) panel.append(topics);
    return panel;
  }
  const grid = el("div", { class: "ev-grid" },
    phrasesBlock(list(evidence.overrepresented)),
    el("div", {}, vanishedBlock(list(evidence.vanished), body.vanished_for_windows),
      topicsBlock(list(evidence.vanished_topics)), duplicatesBlock(list(evidence.duplicates))));
  panel.append(grid);
  const examples = examplesBlock(evidence.examples);
  if (examples) panel.append(examples);
  if (quotedTextWithheld(evidence)) panel.append(withheldNote());
  return panel;
}

// Put the panel of the card's selected window (the latest unless one was chosen) into its
// slot; the detail is fetched once per window and the panel node kept, so a refresh does
// not close the groups the user opened.
export async function showEvidence(card) {
  const slot = card.el.querySelector(".evidence-slot");
  const evaluations = card.evaluations || [];
  if (!slot || !evaluations.length) return;
  const latest = evaluations[evaluations.length - 1];
  const id = card.selectedId ?? latest.id;
  const cached = card.evidence;
  const key = `${id}|${state.key ? "key" : "anonymous"}`;
  if (cached && cached.key === key) {
    cached.panel.classList.toggle("selected-window", id !== latest.id);
    slot.replaceChildren(cached.panel);
    return;
  }
  if (!cached) slot.replaceChildren(el("p", { class: "muted small" }, "loading what changed…"));
  else slot.replaceChildren(cached.panel);
  // the same window asked for twice (a link handled by two listeners, a refresh while the
  // first request runs) is fetched once
  if (card.evidenceLoading === key) return;
  card.evidenceLoading = key;
  try {
    const body = await api(`/models/${encodeURIComponent(card.name)}/evaluations/` +
      `${encodeURIComponent(id)}?vanished_windows=${VANISHED_WINDOWS}`);
    const panel = evidencePanel(body, { latest: id === latest.id });
    card.evidence = { key, panel };
    // a newer choice made while this one loaded wins
    const current = card.selectedId ?? (card.evaluations || []).at(-1)?.id;
    const now = card.el.querySelector(".evidence-slot");
    if (now && current === id) now.replaceChildren(panel);
  } catch (exc) {
    const now = card.el.querySelector(".evidence-slot");
    if (now) {
      now.replaceChildren(el("p", { class: "error-line" },
        `Could not load window ${id}: ${exc.message}`));
    }
  } finally {
    if (card.evidenceLoading === key) card.evidenceLoading = null;
  }
}

// The window an alert links to: the notifications' URL is /#model=NAME&window=I&evaluation=ID
// (service/domain/alerts.py). Null when the address names no evaluation.
export function linkedWindow(hash = location.hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const model = params.get("model");
  const evaluation = Number(params.get("evaluation"));
  if (!model || !Number.isInteger(evaluation) || evaluation < 1) return null;
  return { model, evaluation };
}

// Choose the window whose evidence the card shows (null: the latest).
export function selectWindow(card, evaluationId) {
  card.selectedId = evaluationId == null ? null : Number(evaluationId);
  return showEvidence(card);
}
