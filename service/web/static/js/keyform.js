// The API key form (the key lives in this tab's sessionStorage only).
import { acknowledge } from "./alerts.js";
import { refresh } from "./page.js";
import { $, KEY_STORAGE, state } from "./state.js";

// -------------------------------------------------------------- API key

export function updateKeyButton() {
  const button = $("#key-button");
  button.textContent = state.key ? "API key ✓" : "API key";
  button.title = state.key ? "A key is kept for this tab" : "Set an API key";
}

export function forgetKey() {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  updateKeyButton();
}

export function openKeyForm(message) {
  const form = $("#key-form");
  form.hidden = false;
  let note = $("#key-note");
  if (!note) {
    note = document.createElement("p");
    note.id = "key-note";
    note.className = "note";
    form.insertBefore(note, form.firstChild);
  }
  note.textContent = message || "";
  note.hidden = !message;
  const input = $("#key-input");
  input.value = "";
  input.focus();
}

export function closeKeyForm() {
  $("#key-form").hidden = true;
}

export function setupKeyForm() {
  updateKeyButton();
  $("#key-button").addEventListener("click", () => {
    if ($("#key-form").hidden) openKeyForm("");
    else closeKeyForm();
  });
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) {
      openKeyForm("The key is empty.");
      return;
    }
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    updateKeyButton();
    closeKeyForm();
    const pending = state.pendingAck;
    state.pendingAck = null;
    if (pending != null) acknowledge(pending);
    else refresh();
  });
  $("#key-clear").addEventListener("click", () => {
    forgetKey();
    closeKeyForm();
  });
  $("#key-cancel").addEventListener("click", () => {
    state.pendingAck = null;
    closeKeyForm();
  });
}
