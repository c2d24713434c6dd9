// The REST client: bearer key, problem+json errors, the error banner.
import { $, API, state } from "./state.js";

export function listOf(body, key) {
  return body && Array.isArray(body[key]) ? body[key] : [];
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let resp;
  try {
    resp = await fetch(API + path, { ...options, headers });
  } catch (exc) {
    throw new ApiError(0, "the collapsewatch server is not reachable");
  }
  const text = await resp.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch (exc) {
      body = text;
    }
  }
  if (!resp.ok) {
    const detail = body && typeof body === "object" && body.detail ? body.detail : resp.statusText;
    throw new ApiError(resp.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

export function showError(message) {
  const el = $("#error");
  if (!message) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = message;
}
