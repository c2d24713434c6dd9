// Model data: GET /models plus each model's latest health.
import { api, listOf } from "./api.js";
import { isDemo, parseTime } from "./format.js";
import { HEALTH_FETCH_CONCURRENCY, state } from "./state.js";

// ------------------------------------------------------------ model data

// The model as the page needs it: GET /models (ModelPublic) plus its latest health, from
// the list itself when the server includes it, else from GET /models/{name}/health.
export function modelView(m) {
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
    kind: m.kind || "model",
    maxSyntheticShare: m.max_synthetic_share ?? null,
  };
}

export async function loadHealthForList() {
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

export function buildViews() {
  const views = state.rawModels.map(modelView);
  views.sort((a, b) => (b.demo - a.demo) || a.name.localeCompare(b.name));
  state.models = views;
}

export async function loadModels() {
  state.rawModels = listOf(await api("/models"), "models");
  buildViews();
}
