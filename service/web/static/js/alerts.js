// Firing and recent alerts, and acknowledging one.
import { api, listOf, showError } from "./api.js";
import { esc, parseTime, timeHtml } from "./format.js";
import { forgetKey, openKeyForm } from "./keyform.js";
import { $, state } from "./state.js";

// every firing alert: /alerts is paged (next_cursor); a bounded number of pages, so a storm
// of thousands cannot stall the refresh
const FIRING_PAGES = 10;

async function allFiring() {
  let out = [];
  let cursor = null;
  for (let i = 0; i < FIRING_PAGES; i++) {
    const body = await api(`/alerts?state=firing&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    out = out.concat(listOf(body, "alerts"));
    cursor = body && body.next_cursor;
    if (!cursor) break;
  }
  return out;
}

export async function loadAlerts() {
  const [firing, resolved] = await Promise.all([
    allFiring(),
    api("/alerts?state=resolved&limit=20"),
  ]);
  state.firing = firing;
  state.recent = listOf(resolved, "alerts")
    .sort((a, b) => (parseTime(b.resolved_at || b.started_at) || 0) -
      (parseTime(a.resolved_at || a.started_at) || 0))
    .slice(0, 20);
}

// ---------------------------------------------------------------- alerts

export function alertModel(a) {
  return a.model || "";
}

export function alertRow(a, firing) {
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

export function renderAlerts() {
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

export async function acknowledge(id) {
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
