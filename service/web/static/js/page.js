// The refresh loop, page-wide events and start-up.
import { acknowledge, loadAlerts, renderAlerts } from "./alerts.js";
import { showError } from "./api.js";
import { ensureCards, loadCard, onVisibility } from "./cards.js";
import { linkedWindow, selectWindow } from "./evidence.js";
import { renderFleet } from "./fleet.js";
import { fmtClock } from "./format.js";
import { forgetKey, openKeyForm, setupKeyForm } from "./keyform.js";
import { buildViews, loadHealthForList, loadModels } from "./models.js";
import { $, DEFAULT_WINDOWS, REFRESH_MS, state } from "./state.js";

// --------------------------------------------------------------- refresh

export async function refresh() {
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
        : "This server needs an API key to read (it is reachable beyond this machine). " +
          "Enter a key of any scope; it is kept for this tab only.");
      if ($("#key-form").hidden) openKeyForm("");
    } else {
      showError(`Could not refresh: ${exc.message}. Retrying in ${REFRESH_MS / 1000} s.`);
    }
  }
  state.refreshTimer = setTimeout(refresh, delay);
}

export function setupEvents() {
  document.addEventListener("click", (event) => {
    const ack = event.target.closest("button.ack");
    if (ack) {
      acknowledge(ack.dataset.alertId);
    }
    // a window's point on a chart opens its "What changed" panel; "show latest" goes back
    const point = event.target.closest(
      "svg.chart-svg circle.pt[data-evaluation-id], svg.share-svg circle.share-pt[data-evaluation-id]");
    const back = event.target.closest("button.ev-latest");
    if (point || back) {
      const card = state.cards.get((point || back).closest("article.card").dataset.model);
      if (card) selectWindow(card, point ? point.dataset.evaluationId : null);
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

export function setupLinks() {
  // a new alert link opened in the same tab changes only the hash
  window.addEventListener("hashchange", () => {
    const link = linkedWindow();
    const card = link && state.cards.get(link.model);
    if (card) selectWindow(card, link.evaluation);
  });
}

export function start() {
  state.observer = new IntersectionObserver(onVisibility, { rootMargin: "200px 0px" });
  setupKeyForm();
  setupEvents();
  setupLinks();
  refresh();
}
