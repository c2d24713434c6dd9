// The fleet table: one row per model.
import { esc, fmtInt, healthBadge, shortSha, timeHtml } from "./format.js";
import { $, HEALTH_LABEL, state } from "./state.js";

// ----------------------------------------------------------------- fleet

export function referenceHtml(v) {
  if (!v.reference.name && !v.reference.sha256) return '<span class="muted">–</span>';
  const version = v.reference.version != null ? ` v${esc(v.reference.version)}` : "";
  return `${esc(v.reference.name || "")}${version} <code class="sha" title="sha256 ${esc(v.reference.sha256 || "")}">` +
    `${esc(shortSha(v.reference.sha256))}</code>`;
}

export function renderFleet() {
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
