// Links from notifications: /#model=<name>&window=<index>&evaluation=<id> scrolls the page
// to the model's card and shows that window's evidence ("What changed"). The fragment never
// reaches the server, so a link leaks nothing to proxies or access logs.
import { selectWindow } from "./evidence.js";
import { state } from "./state.js";

// give up waiting for a card after this long (a deleted model, a mistyped link)
const WAIT_MS = 60000;

export function parseDeepLink(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const model = params.get("model");
  if (!model) return null;
  const evaluation = Number(params.get("evaluation"));
  return { model, evaluation: Number.isInteger(evaluation) && evaluation > 0 ? evaluation : null };
}

function open(link) {
  const card = state.cards.get(link.model);
  if (!card) return false;
  if (link.evaluation != null) {
    // not loaded yet: the card shows this window when its evaluations arrive
    if (card.evaluations) selectWindow(card, link.evaluation);
    else card.selectedId = link.evaluation;
  }
  card.el.classList.add("deep-linked");
  card.el.scrollIntoView({ block: "start" });
  return true;
}

function follow(link) {
  // cards are built after the first refresh: wait for this model's
  if (open(link)) return;
  const observer = new MutationObserver(() => {
    if (open(link)) observer.disconnect();
  });
  observer.observe(document.body, { childList: true, subtree: true });
  setTimeout(() => observer.disconnect(), WAIT_MS);
}

export function setupDeepLinks() {
  const go = () => {
    const link = parseDeepLink(window.location.hash);
    if (link) follow(link);
  };
  window.addEventListener("hashchange", go);
  go();
}

setupDeepLinks();
