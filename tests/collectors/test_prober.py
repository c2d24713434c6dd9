"""The OpenAI-compatible prober: probe files, retries, failures, and the CLI into the real API.

OpenAI cannot run here, so a real loopback HTTP server speaking its chat and completions
shapes stands in for it, answering 429 and 500 now and then.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from collectors import Client
from collectors.prober import OpenAIProber, ProbeFileError, load_probes, parse_duration
from service.cli import main as cli_main
from tests.collectors.harness import COLLAPSEWATCH, ApiServer, create_model, stored
from tests.support import process, recording_server

JSON = {"content-type": "application/json"}


class FakeOpenAI:
    """Answers like /v1/chat/completions and /v1/completions; every ``every_429``-th request
    gets a 429 and every ``every_500``-th a 500. Prompts containing "ALWAYS500" always fail,
    "BAD" gets a 400, "SLOW" answers after ``slow_seconds``."""

    def __init__(self, every_429: int = 4, every_500: int = 7, slow_seconds: float = 0.0):
        self.every_429, self.every_500, self.slow_seconds = every_429, every_500, slow_seconds
        self.statuses: list[int] = []
        self.bodies: list[dict] = []
        self._lock = threading.Lock()

    def _status(self, prompt: str) -> int:
        with self._lock:
            n = len(self.statuses) + 1
            if "ALWAYS500" in prompt:
                status = 500
            elif "BAD" in prompt:
                status = 400
            elif n % self.every_429 == 0:
                status = 429
            elif n % self.every_500 == 0:
                status = 500
            else:
                status = 200
            self.statuses.append(status)
            return status

    def __call__(self, rec):
        body = rec.json()
        chat = rec.path == "/v1/chat/completions"
        if rec.path not in ("/v1/chat/completions", "/v1/completions"):
            return 404, JSON, b'{"error": {"message": "unknown path"}}'
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        self.bodies.append(body)
        status = self._status(prompt)
        if "SLOW" in prompt:
            time.sleep(self.slow_seconds)
        if status == 429:
            return 429, {**JSON, "retry-after": "0"}, b'{"error": {"message": "rate limited"}}'
        if status != 200:
            return status, JSON, json.dumps({"error": {"message": f"status {status}"}}).encode()
        text = f"answer {len(self.statuses)} to: {prompt}"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "stop"} if chat else
                  {"index": 0, "text": text, "finish_reason": "length"})
        return 200, JSON, json.dumps({"id": "cmpl-1", "object": "chat.completion" if chat
                                      else "text_completion", "model": body["model"],
                                      "choices": [choice]}).encode()


def _ingest_sink(rec):
    n = len(rec.json()["samples"])
    return 202, JSON, json.dumps({"accepted": n, "duplicates": 0}).encode()


def _ingested(sink) -> list[dict]:
    return [s for r in sink.received() for s in r.json()["samples"]]


PROBES_TXT = """\
# everyday prompts
Describe a day at a market.
Write a note to a neighbour.

[rare:botany] Describe how Rafflesia arnoldii is pollinated.
"""


# -- probe files and durations --------------------------------------------------------------
def test_text_probe_files_mark_rare_topics_and_ids_survive_reordering(tmp_path):
    path = tmp_path / "probes.txt"
    path.write_text(PROBES_TXT)
    probes = load_probes(path)
    assert [p.prompt for p in probes] == ["Describe a day at a market.",
                                          "Write a note to a neighbour.",
                                          "Describe how Rafflesia arnoldii is pollinated."]
    assert [p.rare_topic for p in probes] == [False, False, True]
    assert probes[2].topic == "botany"
    path.write_text("\n".join(reversed(PROBES_TXT.splitlines())))
    assert {p.id for p in load_probes(path)} == {p.id for p in probes}


def test_jsonl_probe_files_carry_ids_topics_and_attributes(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"prompt": "Hi", "id": "greet", "attributes": {"lang": "en"}}\n'
                    '{"prompt": "Tlingit prefixes?", "rare_topic": true, "topic": "ling",'
                    ' "system": "Be brief."}\n')
    greet, rare = load_probes(path)
    assert (greet.id, greet.rare_topic, greet.attributes) == ("greet", False, {"lang": "en"})
    assert (rare.rare_topic, rare.topic, rare.system) == (True, "ling", "Be brief.")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("p.jsonl", '{"prompt": "a"}\n{"promt": "b"}\n', r"p.jsonl:2: unknown key\(s\) promt"),
    ("p.jsonl", '{"prompt": "a"}\nnot json\n', "p.jsonl:2: not valid JSON"),
    ("p.jsonl", '{"prompt": "a", "rare_topic": "yes"}\n', "rare_topic.*true or false"),
    ("p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "appears twice"),
    ("p.txt", "# only a comment\n\n", "has no prompts"),
    ("p.txt", "[rare]\n", "needs a prompt"),
])
def test_bad_probe_files_are_refused_naming_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ProbeFileError, match=message):
        load_probes(path)


def test_durations_read_like_the_cli_writes_them():
    assert parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("42") == 42
    for bad in ("", "15 minutes", "0s", "-3"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- probing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_round_retries_429_and_500_and_tags_rare_topic_answers(tmp_path, endpoint):
    path = tmp_path / "probes.txt"
    path.write_text(PROBES_TXT)
    fake = FakeOpenAI(every_429=4, every_500=7)
    with recording_server(fake) as openai, recording_server(_ingest_sink) as sink:
        client = Client(sink.url, "k", "watched", batch_size=100)
        prober = OpenAIProber(f"{openai.url}/v1", "small-lm", load_probes(path), client,
                              endpoint=endpoint, samples_per_prompt=3, temperature=0.7,
                              max_tokens=32, retries=4, backoff_base=0.01)
        result = prober.run_round("r1")
        prober.close()
        client.close()
        samples = _ingested(sink)
    assert 429 in fake.statuses and 500 in fake.statuses
    assert (result.calls, result.succeeded, result.failed, result.recorded) == (9, 9, 0, 9)
    assert len(samples) == 9
    rare = [s for s in samples if s["attributes"]["rare_topic"]]
    assert len(rare) == 3 and all(s["attributes"]["topic"] == "botany" for s in rare)
    assert {s["prompt"] for s in rare} == {"Describe how Rafflesia arnoldii is pollinated."}
    first = samples[0]
    assert first["text"].startswith("answer ") and first["text"].endswith(first["prompt"])
    assert first["attributes"]["endpoint"] == endpoint
    assert first["attributes"]["upstream_model"] == "small-lm"
    assert sorted(s["attributes"]["sample_index"] for s in samples) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    sent = fake.bodies[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("small-lm", 0.7, 32)


def test_each_failed_call_logs_one_line_and_the_round_goes_on(tmp_path, caplog):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"prompt": "fine", "id": "ok"}\n'
                    '{"prompt": "ALWAYS500", "id": "down"}\n'
                    '{"prompt": "BAD request", "id": "bad"}\n'
                    '{"prompt": "SLOW", "id": "slow"}\n'
                    '{"prompt": "fine again", "id": "ok2"}\n')
    fake = FakeOpenAI(every_429=10**9, every_500=10**9, slow_seconds=1.0)
    caplog.set_level(logging.ERROR, "collectors.prober")
    with recording_server(fake) as openai, recording_server(_ingest_sink) as sink:
        client = Client(sink.url, "k", "watched")
        prober = OpenAIProber(f"{openai.url}/v1", "m", load_probes(path), client,
                              endpoint="completions", samples_per_prompt=2, retries=1,
                              timeout=0.3, backoff_base=0.01)
        result = prober.run_round("r1")
        prober.close()
        client.close()
        samples = _ingested(sink)
    assert (result.calls, result.succeeded, result.failed) == (10, 4, 6)
    assert sorted({s["attributes"]["probe"] for s in samples}) == ["ok", "ok2"]
    failures = [r for r in caplog.records if r.getMessage().startswith("probe call failed")]
    assert len(failures) == 6
    by_probe = {r.probe: r for r in failures}
    assert by_probe["down"].status == 500 and by_probe["down"].attempts == 2
    assert by_probe["bad"].status == 400 and by_probe["bad"].attempts == 1  # 4xx: no retry
    assert "Timeout" in by_probe["slow"].error


def test_rounds_repeat_on_schedule_until_stopped(tmp_path):
    path = tmp_path / "probes.txt"
    path.write_text("one prompt\n")
    fake = FakeOpenAI(every_429=10**9, every_500=10**9)
    stop = threading.Event()
    with recording_server(fake) as openai, recording_server(_ingest_sink) as sink:
        client = Client(sink.url, "k", "watched")
        prober = OpenAIProber(f"{openai.url}/v1", "m", load_probes(path), client, stop=stop)
        rounds = []

        def on_round(result):
            rounds.append(result)
            if len(rounds) == 3:
                stop.set()

        prober.run(every=0.2, on_round=on_round)
        prober.close()
        client.close()
    assert len(rounds) == 3 and len(_ingested(sink)) == 3


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_refuses_bad_options_with_one_line(tmp_path, capsys, monkeypatch):
    probes = tmp_path / "probes.txt"
    probes.write_text("a prompt\n")
    base = ["collect", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
            "--prompts", str(probes)]
    monkeypatch.delenv("COLLAPSEWATCH_INGEST_KEY", raising=False)
    assert cli_main(base) == 2
    assert "COLLAPSEWATCH_INGEST_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("COLLAPSEWATCH_INGEST_KEY", "k")
    assert cli_main([*base, "--every", "soon"]) == 2
    assert "--every: cannot read duration 'soon'" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("{}\n")
    assert cli_main([*base[:-1], str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and len(err.strip().splitlines()) == 1


def test_cli_once_probes_into_the_real_api(database_url, service_env, tmp_path):
    model = "probed"
    key = create_model(model)
    probes = tmp_path / "probes.txt"
    probes.write_text(PROBES_TXT)
    fake = FakeOpenAI(every_429=5, every_500=6)
    api = ApiServer(service_env, tmp_path)
    api.start()
    try:
        with recording_server(fake) as openai:
            args = [COLLAPSEWATCH, "collect", "openai", "--base-url", f"{openai.url}/v1",
                    "--model", "small-lm", "--monitored-model", model, "--prompts", str(probes),
                    "--samples-per-prompt", "4", "--temperature", "0.9", "--max-tokens", "16",
                    "--rate", "0", "--retries", "5", "--once",
                    "--collapsewatch-url", api.url, "--spool-dir", str(tmp_path / "spool")]
            with process(args, tmp_path / "prober.log",
                         env={**service_env, "COLLAPSEWATCH_INGEST_KEY": key}) as prober:
                code = prober.popen.wait(120)
                assert code == 0, prober.log()[-3000:]
    finally:
        api.stop()
    assert 429 in fake.statuses and 500 in fake.statuses
    rows = stored(database_url, model)
    assert len(rows) == 12
    rare = [r for r in rows if r[2]["rare_topic"]]
    assert len(rare) == 4 and {r[2]["probe"] for r in rare} == {load_probes(probes)[2].id}
    assert all(r[2]["source"] == "openai-prober" for r in rows)
