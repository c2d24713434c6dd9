"""The demo behind ``collapsewatch serve --demo``: watch a model collapse within minutes.

It goes through the product's own paths, as a user would: REST for the human reference, the
models and a baseline; the SDK (:class:`collectors.Client`) for samples; the pipeline scores
the windows and alerting fires. Everything it creates is named ``demo-*`` and described as
demo data.

- ``demo-fortunes``: a human reference built from part of the shipped fortunes sample.
- ``demo-stable``: fresh held-out fortunes (human text the reference never saw). Its baseline
  is collected automatically from its first windows, the product's default. It stays healthy.
- ``demo-recursive``: a word n-gram model (``metrics.synthetic``) retrained on its own output,
  one generation about every minute, sampled at temperature 0.9 as deployed models usually
  decode. Its baseline is generation 0, pinned explicitly. Rare words go first (early
  collapse), then diversity falls and sameness rises (collapse), and the collapse alert fires.
  From about the third generation the loop falls into repetition modes that the evidence lists
  as over-represented phrases, and the fortunes words it no longer produces as vanished.

Restarting with the same data directory continues where it stopped: sample ids are
``<model>-<n>`` and the generation follows from how many samples were already ingested.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
from sqlalchemy import update

from service.logging import get_logger

log = get_logger("collapsewatch.demo")

REFERENCE_NAME = "demo-fortunes"
STABLE = "demo-stable"
RECURSIVE = "demo-recursive"
KEY_DESCRIPTION = "demo keys of `collapsewatch serve --demo`"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and pace of the demo. Small windows so that something happens every few seconds."""

    reference_documents: int = 6000
    window_size: int = 150
    samples_per_second: float = 10.0  # per model
    generation_seconds: float = 45.0
    # generations after this one repeat it: the collapsed model keeps producing collapsed text
    final_generation: int = 8
    # Documents generation 1 is trained on; each later generation gets ``train_decay`` times
    # fewer (never under ``min_train_documents``). A shrinking budget loses rare words first
    # and then, once the model mostly replays what it memorised, turns repetitive: early
    # collapse, then collapse, within a few generations.
    train_documents: int = 2500
    train_decay: float = 0.65
    min_train_documents: int = 300
    baseline_documents: int = 600
    auto_baseline_windows: int = 3
    # Sampling temperature of every generation (its training output, its baseline and what it
    # serves). Below 1 each generation over-produces what was already likely, so repetition
    # modes grow generation after generation, as in recursive training with the truncated
    # decoding deployed models use. At temperature 1 the same loop loses its tail words just
    # as surely but spreads the loss thinly: in 150-document windows no single phrase or word
    # changes enough to be significant, and the evidence lists stay empty while the metrics
    # read collapse.
    temperature: float = 0.9
    seed: int = 20240601

    @property
    def samples_per_generation(self) -> int:
        return max(1, round(self.samples_per_second * self.generation_seconds))

    def train_budget(self, generation: int) -> int:
        """How many of its own documents generation ``generation`` (>= 1) is trained on."""
        decayed = self.train_documents * self.train_decay ** (generation - 1)
        return max(self.min_train_documents, round(decayed))


@dataclass(frozen=True)
class DemoSplit:
    """Three disjoint parts of the shipped human sample."""

    reference: list[str]
    stable: list[str]
    generator: list[str]


def split_documents(documents: Sequence[str], config: DemoConfig) -> DemoSplit:
    """Reference, held-out stream for demo-stable, and the generator's training text.

    A seeded shuffle, so every start of the demo (and every machine) gets the same split.
    The sample repeats some fortunes (the same quote in several files); each text is kept
    once, so held-out text never also sits in the reference.
    """
    documents = list(dict.fromkeys(documents))
    order = list(range(len(documents)))
    random.Random(config.seed).shuffle(order)
    n_ref = min(config.reference_documents, len(order) // 2)
    rest = order[n_ref:]
    half = len(rest) // 2
    return DemoSplit(
        reference=[documents[i] for i in order[:n_ref]],
        stable=[documents[i] for i in rest[:half]],
        generator=[documents[i] for i in rest[half:]],
    )


class StableStream:
    """Held-out human documents, each reshuffled cycle a fresh permutation (no repeats
    within a cycle, so windows carry no artificial duplicates)."""

    def __init__(self, pool: Sequence[str], seed: int) -> None:
        if not pool:
            raise ValueError("the held-out pool of human documents is empty")
        self._pool = list(pool)
        self._seed = seed
        self._cycle = -1
        self._order: list[int] = []

    def document(self, n: int) -> str:
        cycle, pos = divmod(n, len(self._pool))
        if cycle != self._cycle:
            self._order = list(range(len(self._pool)))
            random.Random(f"{self._seed}-{cycle}").shuffle(self._order)
            self._cycle = cycle
        return self._pool[self._order[pos]]


class RecursiveStream:
    """The n-gram model of each generation, trained on the previous generation's output.

    Generation 0 is trained on human text; generation g+1 on ``config.train_budget(g + 1)``
    samples of generation g ("replace": no human data kept, the regime that keeps losing
    tails; Shumailov et al. 2024, "AI models collapse when trained on recursively generated
    data"). Every
    generation is derived from the seed, so a restart rebuilds the same chain.
    """

    def __init__(self, human: Sequence[str], config: DemoConfig,
                 train: Callable[[Sequence[str], int], Any] | None = None,
                 generate: Callable[[Any, int, int], list[str]] | None = None) -> None:
        self._config = config
        self._train = train or _train_ngram
        self._generate = generate or partial(_generate_ngram, temperature=config.temperature)
        self._models: list[Any] = [self._train(list(human), config.seed)]
        self._batch: dict[int, tuple[int, list[str]]] = {}

    def generation_of(self, n: int) -> int:
        return min(n // self._config.samples_per_generation, self._config.final_generation)

    def model(self, generation: int) -> Any:
        while len(self._models) <= generation:
            g = len(self._models) - 1
            own_output = self._generate(self._models[g], self._config.train_budget(g + 1),
                                        self._config.seed + 1000 + g)
            self._models.append(self._train(own_output, self._config.seed + g + 1))
            log.info("demo generation trained", extra={"model": RECURSIVE, "generation": g + 1})
        return self._models[generation]

    def baseline_documents(self) -> list[str]:
        """Fresh output of generation 0 (not the samples that will be streamed)."""
        return self._generate(self.model(0), self._config.baseline_documents,
                              self._config.seed + 7)

    def document(self, n: int) -> str:
        """The n-th streamed sample; generated in blocks so the model is sampled in bulk."""
        generation = self.generation_of(n)
        block_size = 50
        block = n // block_size
        cached = self._batch.get(generation)
        if cached is None or cached[0] != block:
            docs = self._generate(self.model(generation), block_size,
                                  self._config.seed * 31 + block)
            self._batch = {generation: (block, docs)}
            cached = self._batch[generation]
        return cached[1][n % block_size]


def _train_ngram(documents: Sequence[str], seed: int) -> Any:
    """A word trigram model (maximum likelihood; training itself draws nothing at random)."""
    from metrics import synthetic

    return synthetic.NGramModel.train(documents, order=3)


def _generate_ngram(model: Any, count: int, seed: int, temperature: float = 1.0) -> list[str]:
    return model.sample(count, seed=seed, temperature=temperature)


# ----------------------------------------------------------------------------- setup


def create_demo_keys() -> tuple[str, str]:
    """An admin key (reference, models, baseline) and an ingest key for the SDK.

    Keys of earlier demo runs are revoked: only their hashes were stored, so nobody can
    use them for anything else anyway.
    """
    from service.domain.db import session_scope
    from service.domain.keys import create_key
    from service.domain.tables import ApiKey

    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.description == KEY_DESCRIPTION, ApiKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        admin = create_key(session, "admin", None, KEY_DESCRIPTION)
        ingest = create_key(session, "ingest", None, KEY_DESCRIPTION)
    return admin, ingest


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"demo could not {what}: HTTP {response.status_code} "
                           f"{response.text[:300]}")
    return response.json() if response.content else None


def ensure_reference(http: httpx.Client, documents: list[str]) -> int:
    """The id of the demo reference, created on first start (a reference is immutable)."""
    listed = _check(http.get("/api/v1/references"), "list references")["references"]
    mine = [r for r in listed if r["name"] == REFERENCE_NAME]
    if mine:
        return max(mine, key=lambda r: r["version"])["id"]
    log.info("demo building its human reference", extra={"documents": len(documents)})
    created = _check(http.post("/api/v1/references", json={
        "name": REFERENCE_NAME, "documents": documents,
        "description": "Demo reference: part of the shipped Debian fortunes sample "
                       "(collapsewatch serve --demo)",
    }, timeout=600), "create the demo reference")
    return created["id"]


def ensure_model(http: httpx.Client, name: str, reference_id: int, config: DemoConfig,
                 *, auto_baseline_windows: int, description: str) -> dict:
    r = http.get(f"/api/v1/models/{name}")
    if r.status_code == 200:
        return r.json()
    if r.status_code != 404:
        _check(r, f"read model {name}")
    created = http.post("/api/v1/models", json={
        "name": name, "reference_id": reference_id, "description": description,
        "window": {"size": config.window_size, "min_size": min(50, config.window_size)},
        "auto_baseline_windows": auto_baseline_windows,
    })
    if created.status_code == 409:  # another demo process created it meanwhile
        return _check(http.get(f"/api/v1/models/{name}"), f"read model {name}")
    return _check(created, f"create model {name}")


def ensure_recursive_baseline(http: httpx.Client, model: dict,
                              documents: Callable[[], list[str]]) -> None:
    """Pin generation 0's own output as demo-recursive's baseline, once."""
    if model.get("baseline"):
        return
    _check(http.post(f"/api/v1/models/{RECURSIVE}/baseline", json={
        "documents": documents(), "name": f"{RECURSIVE} generation 0",
        "reason": "demo: the generator's known-good output before any retraining",
    }, timeout=600), "pin the demo baseline")
    log.info("demo baseline pinned", extra={"model": RECURSIVE})


# ------------------------------------------------------------------------------ feed


@dataclass
class _Feed:
    name: str
    stream: StableStream | RecursiveStream
    client: Any
    next_n: int  # index of the next sample (= samples already ingested on a restart)


def _pace(feeds: list[_Feed], config: DemoConfig, stop_event: threading.Event) -> None:
    """Record samples at ``samples_per_second`` per model until ``stop_event`` is set."""
    started = time.monotonic()
    first = {f.name: f.next_n for f in feeds}
    last_generation = None
    while not stop_event.is_set():
        due = int((time.monotonic() - started) * config.samples_per_second)
        for feed in feeds:
            target = first[feed.name] + due
            while feed.next_n < target and not stop_event.is_set():
                n = feed.next_n
                attributes = {"demo": True}
                if isinstance(feed.stream, RecursiveStream):
                    generation = feed.stream.generation_of(n)
                    attributes["generation"] = generation
                    if generation != last_generation:
                        log.info("demo generation", extra={"model": feed.name,
                                                           "generation": generation})
                        last_generation = generation
                feed.client.record(feed.stream.document(n), id=f"{feed.name}-{n}",
                                   attributes=attributes)
                feed.next_n += 1
        stop_event.wait(0.25)


def run_demo(stop_event: threading.Event, base_url: str,
             config: DemoConfig | None = None) -> None:
    """Set up the demo (idempotently) and feed it until ``stop_event`` is set."""
    from collectors import Client
    from service.demo.sample_data import human_documents

    config = config or DemoConfig()
    split = split_documents(human_documents(), config)
    admin_key, ingest_key = create_demo_keys()
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        reference_id = ensure_reference(http, split.reference)
        if stop_event.is_set():
            return
        stable = ensure_model(
            http, STABLE, reference_id, config,
            auto_baseline_windows=config.auto_baseline_windows,
            description="Demo model (collapsewatch serve --demo): held-out human fortunes the "
                        "reference never saw. Its first windows become its baseline.")
        recursive = ensure_model(
            http, RECURSIVE, reference_id, config, auto_baseline_windows=0,
            description="Demo model (collapsewatch serve --demo): a word n-gram model retrained "
                        "on its own output, one generation about every "
                        f"{config.generation_seconds:g} s. Baseline: generation 0.")
        recursive_stream = RecursiveStream(split.generator, config)
        ensure_recursive_baseline(http, recursive, recursive_stream.baseline_documents)

    clients = [Client(base_url, ingest_key, name, batch_size=100, flush_interval=1.0,
                      flush_at_exit=False, user_agent="collapsewatch-demo")
               for name in (STABLE, RECURSIVE)]
    feeds = [
        _Feed(STABLE, StableStream(split.stable, config.seed), clients[0],
              int(stable.get("samples_ingested") or 0)),
        _Feed(RECURSIVE, recursive_stream, clients[1],
              int(recursive.get("samples_ingested") or 0)),
    ]
    log.info("demo feeding", extra={"models": [STABLE, RECURSIVE],
                                    "samples_per_second": config.samples_per_second,
                                    "window_size": config.window_size})
    try:
        _pace(feeds, config, stop_event)
    finally:
        for client in clients:
            client.close(timeout=2)


def start_demo(stop_event: threading.Event, base_url: str | None = None,
               config: DemoConfig | None = None) -> None:
    """Entry point for ``serve --demo`` (run in a thread once the API answers).

    Never raises: a demo problem is logged and retried, it must not take the server down.
    Returns soon after ``stop_event`` is set.
    """
    from service.settings import get_settings

    url = (base_url or get_settings().public_url).rstrip("/")
    # one line per SDK request would bury the server's own log
    logging.getLogger("httpx").setLevel(logging.WARNING)
    delay = 2.0
    while not stop_event.is_set():
        try:
            run_demo(stop_event, url, config)
            return
        except Exception as exc:  # noqa: BLE001 - the server must outlive a demo failure
            log.warning("demo setup or feed failed; retrying",
                        extra={"error": str(exc), "retry_in_seconds": delay})
            stop_event.wait(delay)
            delay = min(delay * 2, 60.0)
