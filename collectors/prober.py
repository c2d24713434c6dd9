"""Ask an OpenAI-compatible endpoint a fixed probe set on a schedule; record the answers.

A fixed probe set asked again and again makes windows comparable over time. Some probes may be
marked as **rare-topic probes**: questions about things a model sees seldom in training. Rare
topics becoming unreachable (answers turning generic or repetitive) is an early sign of
collapse, so their answers carry ``"rare_topic": true`` in ``attributes`` and can be scored as
their own slice.

Probe files
-----------
JSONL (``.jsonl``/``.json``), one object per line::

    {"prompt": "Describe a day at a market.", "id": "market"}
    {"prompt": "Explain Tlingit possessive prefixes.", "rare_topic": true, "topic": "linguistics"}

Keys: ``prompt`` (required), ``id``, ``rare_topic``, ``topic``, ``system`` (a system message
for chat), ``attributes`` (copied into every sample). Any other file is plain text, one prompt
per line; blank lines and lines starting with ``#`` are ignored; ``[rare]`` or
``[rare:TOPIC]`` at the start of a line marks a rare-topic probe::

    Describe a day at a market.
    [rare:linguistics] Explain Tlingit possessive prefixes.

A probe without an ``id`` gets one from a hash of its prompt, so reordering the file does not
change ids.

The endpoint: ``base_url`` is the API root as OpenAI clients take it (``.../v1``); the prober
POSTs to ``{base_url}/chat/completions`` or ``{base_url}/completions``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from collectors.transport import backoff_delay, parse_retry_after

log = logging.getLogger("collectors.prober")

ENDPOINTS = ("chat", "completions")
_RARE_MARK = re.compile(r"^\[rare(?::([^\]]*))?\]\s*", re.IGNORECASE)
_PROBE_KEYS = {"prompt", "id", "rare_topic", "topic", "system", "attributes"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ProbeFileError(ValueError):
    """A probe file that cannot be used; the message names the file and line."""


class Recorder(Protocol):
    """What the prober needs from the SDK client."""

    def record(self, text: str, prompt: str | None = ..., id: str | None = ...,
               attributes: dict[str, Any] | None = ...) -> bool: ...


@dataclass(frozen=True)
class Probe:
    id: str
    prompt: str
    rare_topic: bool = False
    topic: str | None = None
    system: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def parse_duration(value: str) -> float:
    """Seconds in ``"15m"``, ``"30s"``, ``"1h30m"``, ``"500ms"`` or a plain number of seconds."""
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"cannot read duration {value!r}; write e.g. 30s, 15m, 1h or 1h30m")\
                from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


def _probe_id(prompt: str) -> str:
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def _probe_from_json(obj: Any, where: str) -> Probe:
    if not isinstance(obj, dict):
        raise ProbeFileError(f"{where}: expected a JSON object with a \"prompt\"")
    unknown = set(obj) - _PROBE_KEYS
    if unknown:
        raise ProbeFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"allowed: {', '.join(sorted(_PROBE_KEYS))}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ProbeFileError(f"{where}: \"prompt\" must be a non-empty string")
    rare = obj.get("rare_topic", False)
    if not isinstance(rare, bool):
        raise ProbeFileError(f"{where}: \"rare_topic\" must be true or false")
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ProbeFileError(f"{where}: \"attributes\" must be an object")
    for key in ("id", "topic", "system"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ProbeFileError(f"{where}: \"{key}\" must be a string")
    return Probe(id=obj.get("id") or _probe_id(prompt), prompt=prompt, rare_topic=rare,
                 topic=obj.get("topic"), system=obj.get("system"), attributes=attributes)


def _probe_from_text(line: str) -> Probe:
    match = _RARE_MARK.match(line)
    if match is None:
        return Probe(id=_probe_id(line), prompt=line)
    prompt = line[match.end():].strip()
    topic = (match.group(1) or "").strip() or None
    return Probe(id=_probe_id(prompt), prompt=prompt, rare_topic=True, topic=topic)


def load_probes(path: str | Path) -> list[Probe]:
    """Read a probe file (see the module doc); raises ProbeFileError naming the bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeFileError(f"cannot read probe file {path}: {exc}") from exc
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    probes: list[Probe] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        where = f"{path}:{number}"
        if jsonl:
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ProbeFileError(f"{where}: not valid JSON ({exc})") from None
            probe = _probe_from_json(obj, where)
        else:
            probe = _probe_from_text(line)
            if not probe.prompt:
                raise ProbeFileError(f"{where}: a [rare] mark needs a prompt after it")
        probes.append(probe)
    if not probes:
        raise ProbeFileError(f"probe file {path} has no prompts")
    seen: dict[str, int] = {}
    for i, probe in enumerate(probes):
        if probe.id in seen:
            raise ProbeFileError(f"probe file {path}: id {probe.id!r} appears twice; "
                                 "give each probe its own id (or its own prompt)")
        seen[probe.id] = i
    return probes


@dataclass
class CallOutcome:
    text: str | None = None
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class RoundResult:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    recorded: int = 0
    seconds: float = 0.0


class _RateLimiter:
    """At most ``rate`` request starts per second (0 = unlimited), interruptible by ``stop``."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self.next_start = 0.0

    def wait(self) -> bool:
        now = time.monotonic()
        if self.next_start > now and self.stop.wait(self.next_start - now):
            return False
        self.next_start = max(now, self.next_start) + self.interval
        return True


class OpenAIProber:
    """One probe set against one OpenAI-compatible model, recorded through an SDK client."""

    def __init__(
        self,
        base_url: str,
        model: str,
        probes: list[Probe],
        recorder: Recorder,
        *,
        endpoint: str = "chat",
        samples_per_prompt: int = 1,
        temperature: float = 1.0,
        max_tokens: int = 256,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        rate: float = 0.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        if samples_per_prompt < 1:
            raise ValueError("samples_per_prompt must be at least 1")
        self.url = base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat"
                                           else "/completions")
        self.model = model
        self.probes = probes
        self.recorder = recorder
        self.endpoint = endpoint
        self.samples_per_prompt = samples_per_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stop = stop or threading.Event()
        self._limiter = _RateLimiter(rate, self.stop)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    # -- one call --------------------------------------------------------------------------
    def _body(self, probe: Probe) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": probe.system}] if probe.system else []
            messages.append({"role": "user", "content": probe.prompt})
            body["messages"] = messages
        else:
            # completions has no roles: a system text goes in front of the prompt
            body["prompt"] = f"{probe.system}\n\n{probe.prompt}" if probe.system else probe.prompt
        return body

    def _extract(self, answer: Any) -> tuple[str | None, str | None, str | None]:
        """(text, finish reason, problem): the problem says why the answer is not OpenAI's."""
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            where = "message.content" if self.endpoint == "chat" else "text"
            return None, None, f"unexpected answer: no choices[0].{where}"
        if not isinstance(text, str):
            return None, None, "unexpected answer: the generated text is not a string"
        return text, choice.get("finish_reason"), None

    def call(self, probe: Probe) -> CallOutcome:
        """Ask once, retrying 408/429/5xx and connection errors with backoff; never raises."""
        outcome = CallOutcome()
        body = self._body(probe)
        for attempt in range(self.retries + 1):
            if not self._limiter.wait():
                outcome.error = outcome.error or "stopped"
                return outcome
            outcome.attempts = attempt + 1
            retry_after = None
            try:
                response = self._http.post(self.url, json=body)
            except httpx.HTTPError as exc:
                outcome.status, outcome.error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                outcome.status = response.status_code
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = None
                    outcome.text, outcome.finish_reason, outcome.error = self._extract(answer)
                    return outcome
                outcome.error = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                if not (response.status_code in (408, 429) or response.status_code >= 500):
                    return outcome  # a 4xx will not change by asking again
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt < self.retries:
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_max)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.backoff_max))
                log.debug("probe call will be retried", extra={
                    "probe": probe.id, "error": outcome.error, "retry_in_seconds": delay})
                if self.stop.wait(delay):
                    return outcome
        return outcome

    # -- rounds ----------------------------------------------------------------------------
    def run_round(self, round_id: str) -> RoundResult:
        """Every probe, ``samples_per_prompt`` times; a failed call is logged and skipped."""
        result = RoundResult()
        started = time.monotonic()
        for probe in self.probes:
            for k in range(self.samples_per_prompt):
                if self.stop.is_set():
                    result.seconds = time.monotonic() - started
                    return result
                outcome = self.call(probe)
                if outcome.text is None and self.stop.is_set():
                    break  # interrupted by shutdown, not a failure of the endpoint
                result.calls += 1
                if outcome.text is None:
                    result.failed += 1
                    log.error("probe call failed: probe %s sample %d: %s (after %d attempts)",
                              probe.id, k, outcome.error, outcome.attempts, extra={
                        "probe": probe.id, "sample_index": k, "endpoint": self.url,
                        "status": outcome.status, "error": outcome.error,
                        "attempts": outcome.attempts, "round": round_id})
                    continue
                result.succeeded += 1
                attributes = {
                    **probe.attributes,
                    "source": "openai-prober",
                    "probe": probe.id,
                    "rare_topic": probe.rare_topic,
                    "endpoint": self.endpoint,
                    "upstream_model": self.model,
                    "temperature": self.temperature,
                    "max_tokens": self.max_tokens,
                    "round": round_id,
                    "sample_index": k,
                }
                if probe.topic is not None:
                    attributes["topic"] = probe.topic
                if outcome.finish_reason is not None:
                    attributes["finish_reason"] = outcome.finish_reason
                if self.recorder.record(outcome.text, prompt=probe.prompt, attributes=attributes):
                    result.recorded += 1
        result.seconds = time.monotonic() - started
        return result

    def run(self, every: float, once: bool = False,
            on_round: Callable[[RoundResult], None] | None = None) -> list[RoundResult]:
        """Rounds every ``every`` seconds (start to start) until ``stop`` is set, or one round."""
        results: list[RoundResult] = []
        next_start = time.monotonic()
        while not self.stop.is_set():
            round_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            result = self.run_round(round_id)
            results.append(result)
            log.info("probe round finished", extra={
                "round": round_id, "calls": result.calls, "succeeded": result.succeeded,
                "failed": result.failed, "recorded": result.recorded,
                "seconds": round(result.seconds, 3)})
            if on_round is not None:
                on_round(result)
            if once:
                break
            next_start += every
            now = time.monotonic()
            if next_start < now:
                log.warning("probe round took longer than the interval; the next one starts now",
                            extra={"seconds": round(result.seconds, 3), "every": every})
                next_start = now
            self.stop.wait(next_start - now)
        return results
