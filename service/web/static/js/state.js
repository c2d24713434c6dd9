// Constants and the page's one mutable state object.

export const API = "/api/v1";
export const KEY_STORAGE = "collapsewatch.apiKey";
export const REFRESH_MS = 10000;
export const SIGNALS = ["diversity", "tail_coverage", "sameness"];
export const SIGNAL_LABEL = {
  diversity: "Diversity",
  tail_coverage: "Tail coverage",
  sameness: "Sameness",
};
export const SIGNAL_HINT = {
  diversity: "falls in late collapse",
  tail_coverage: "falls first: early collapse",
  sameness: "rises under collapse",
};
// metrics of the embedding model (metrics/semantic.py), shown as their own group
export const SEMANTIC_METRICS = ["semantic_similarity", "semantic_vendi", "semantic_recall",
  "topic_recall", "rare_topic_recall", "topic_entropy", "semantic_mmd"];
export const HEALTH_LABEL = {
  healthy: "healthy",
  early_collapse: "early collapse",
  collapse: "collapse",
  insufficient_data: "insufficient data",
};
// "gone for N windows": how many scored windows a vanished word must be missing from
export const VANISHED_WINDOWS = 3;
export const WINDOW_CHOICES = [50, 200, 1000];
export const DEFAULT_WINDOWS = 200;
// Enough points to show the shape on a ~400 px wide chart; more only costs DOM nodes.
export const MAX_POINTS = 200;
// browsers open at most 6 HTTP/1.1 connections per host; leave room for the charts
export const HEALTH_FETCH_CONCURRENCY = 4;

export const state = {
  rawModels: [],
  models: [],
  health: new Map(), // model name -> latest Score JSON from /health
  cards: new Map(), // model name -> card state
  firing: [],
  recent: [],
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  pendingAck: null,
  refreshTimer: null,
  observer: null,
};
// ---------------------------------------------------------------- helpers

export const $ = (sel, root = document) => root.querySelector(sel);
