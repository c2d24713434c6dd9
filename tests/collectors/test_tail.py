"""The log tailer: fields, bad lines, restarts, rotation, truncation, kill -9 (real processes)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter

import pytest

from collectors import Client
from collectors.tail import LineFormat, Tailer, TailState
from service.cli import main as cli_main
from tests.collectors.harness import COLLAPSEWATCH, ApiServer, create_model, stored, wait_until
from tests.support import process, recording_server

JSON = {"content-type": "application/json"}


class Sink:
    """An ingest stand-in that stores by id like the real API (duplicates counted, not kept)."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict] = {}
        self.received = 0
        self.lock = threading.Lock()

    def __call__(self, rec):
        samples = rec.json()["samples"]
        with self.lock:
            self.received += len(samples)
            new = [s for s in samples if s["id"] not in self.by_id]
            self.by_id.update((s["id"], s) for s in new)
        body = {"accepted": len(new), "duplicates": len(samples) - len(new)}
        return 202, JSON, json.dumps(body).encode()

    def texts(self) -> list[str]:
        with self.lock:
            return [s["text"] for s in self.by_id.values()]


@pytest.fixture
def sink():
    s = Sink()
    with recording_server(s) as srv:
        s.url = srv.url
        yield s


def _write(path, lines, mode="a") -> None:
    with open(path, mode) as f:
        f.writelines(line + "\n" for line in lines)


def _lines(start: int, stop: int) -> list[str]:
    return [json.dumps({"text": f"line {i}", "n": i}) for i in range(start, stop)]


def _tail_once(path, url, state, **kwargs):
    client = Client(url, "k", "m", flush_interval=0.05)
    try:
        return Tailer(path, client, state, **kwargs).run(exit_at_eof=True)
    finally:
        client.close()


class Background:
    """A Tailer following in a thread until stopped."""

    def __init__(self, path, url, state, **kwargs) -> None:
        self.client = Client(url, "k", "m", flush_interval=0.05)
        self.stop = threading.Event()
        self.tailer = Tailer(path, self.client, state, stop=self.stop, poll_interval=0.05,
                             **kwargs)
        self.thread = threading.Thread(target=self.tailer.run)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(30)
        self.client.close()
        return self.tailer.stats


def test_fields_become_the_sample_and_bad_lines_are_skipped_counted_and_logged(
        tmp_path, sink, caplog):
    log = tmp_path / "app.log"
    log.write_text(
        json.dumps({"output": "hello", "input": "hi", "rid": "r-1", "ts": 1700000000,
                    "user": "u1", "secret": "s"}) + "\n"
        "not json at all\n"
        "[1, 2]\n"
        + json.dumps({"input": "no output"}) + "\n"
        "\n"
        + json.dumps({"output": 7, "rid": "r-3"}) + "\n"
        + json.dumps({"output": "world", "rid": "r-2"}) + "\n")
    caplog.set_level(logging.WARNING, "collectors.tail")
    fmt = LineFormat(text_field="output", prompt_field="input", id_field="rid",
                     timestamp_field="ts", attribute_fields=("user",))
    stats = _tail_once(log, sink.url, tmp_path / "state.json", line_format=fmt)
    assert (stats.lines, stats.recorded, stats.bad_lines) == (6, 2, 4)
    hello, world = sink.by_id["r-1"], sink.by_id["r-2"]
    assert (hello["text"], hello["prompt"], hello["attributes"]) == ("hello", "hi", {"user": "u1"})
    assert hello["timestamp"] == 1700000000.0
    assert world["text"] == "world" and "prompt" not in world
    warnings = [r.getMessage() for r in caplog.records if "bad log line" in r.getMessage()]
    assert len(warnings) == 4
    assert any("offset" in w and "not valid JSON" in w for w in warnings)


def test_an_over_long_line_is_skipped_and_the_next_one_read(tmp_path, sink):
    log = tmp_path / "app.log"
    _write(log, [json.dumps({"text": "x" * 5000}), json.dumps({"text": "after"})])
    stats = _tail_once(log, sink.url, tmp_path / "state.json", max_line_bytes=1000)
    assert stats.bad_lines == 1 and sink.texts() == ["after"]


def test_a_restart_resumes_at_the_saved_offset_and_a_replay_is_recognised(tmp_path, sink):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    _write(log, _lines(0, 100))
    _tail_once(log, sink.url, state)
    saved = TailState.load(state)
    assert saved.offset == log.stat().st_size and saved.ino == log.stat().st_ino
    _write(log, _lines(100, 150))
    _tail_once(log, sink.url, state)
    assert sink.received == 150  # nothing sent twice
    # lose the state: everything is read again, and every id is already known
    state.unlink()
    _tail_once(log, sink.url, state)
    assert sink.received == 300 and len(sink.by_id) == 150


def test_start_at_end_skips_what_was_there(tmp_path, sink):
    log = tmp_path / "app.log"
    _write(log, _lines(0, 10))
    with open(log, "a") as f:
        f.write('{"text": "half a li')
    bg = Background(log, sink.url, tmp_path / "state.json", start_at="end")
    wait_until(lambda: TailState.load(tmp_path / "state.json"), 10, "the first checkpoint")
    with open(log, "a") as f:
        f.write('ne"}\n')
    _write(log, _lines(10, 12))
    wait_until(lambda: len(sink.by_id) == 3, 10, "new lines")
    bg.close()
    assert sorted(sink.texts()) == ["half a line", "line 10", "line 11"]


def test_rotation_by_rename_while_following_loses_and_doubles_nothing(tmp_path, sink):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    _write(log, _lines(0, 100))
    bg = Background(log, sink.url, state)
    wait_until(lambda: TailState.load(state), 10, "the tailer to start")
    for rotation in range(3):
        start = 100 + rotation * 400
        _write(log, _lines(start, start + 100))  # most likely unread when the rename comes
        os.rename(log, tmp_path / f"app.log.{rotation + 1}")
        _write(log, _lines(start + 100, start + 250), mode="w")
        _write(log, _lines(start + 250, start + 400))
        # one rotation per poll: a file rotated twice between two looks is not seen
        wait_until(lambda r=rotation: bg.tailer.stats.rotations == r + 1, 10, "the rotation")
    wait_until(lambda: len(sink.by_id) == 1300, 20, "every line")
    bg.close()
    assert Counter(sink.texts()) == Counter(f"line {i}" for i in range(1300))
    assert sink.received == 1300


def test_truncation_while_following_reads_the_new_content(tmp_path, sink):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    _write(log, _lines(0, 200))
    bg = Background(log, sink.url, state)
    wait_until(lambda: len(sink.by_id) == 200, 20, "the first lines")
    _write(log, _lines(200, 230), mode="w")  # truncated, shorter than before
    wait_until(lambda: len(sink.by_id) == 230, 20, "lines after the first truncation")
    # truncated and grown past the old offset before the tailer looks: the first line differs
    bg.stop.set()
    bg.thread.join(10)
    _write(log, _lines(230, 500), mode="w")
    bg2 = Background(log, sink.url, state)
    wait_until(lambda: len(sink.by_id) == 500, 20, "lines after the second truncation")
    stats = bg2.close()
    bg.client.close()
    assert Counter(sink.texts()) == Counter(f"line {i}" for i in range(500))
    assert stats.truncations == 1 and bg.tailer.stats.truncations == 1


def test_rotated_while_down_finishes_the_old_file_first(tmp_path, sink):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    _write(log, _lines(0, 50))
    _tail_once(log, sink.url, state)
    _write(log, _lines(50, 80))
    os.rename(log, tmp_path / "app.log.1")
    _write(log, _lines(80, 100), mode="w")
    _tail_once(log, sink.url, state)
    _tail_once(log, sink.url, state)
    assert [s["text"] for s in sink.by_id.values()] == [f"line {i}" for i in range(100)]
    assert sink.received == 100


def test_cli_refuses_an_unreadable_state_file(tmp_path, capsys, monkeypatch):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    _write(log, _lines(0, 1))
    state.write_text("{broken")
    monkeypatch.setenv("COLLAPSEWATCH_INGEST_KEY", "k")
    code = cli_main(["collect", "tail", str(log), "--model", "m", "--state-file", str(state),
                     "--once", "--collapsewatch-url", "http://127.0.0.1:9",
                     "--spool-dir", str(tmp_path / "spool")])
    assert code == 2
    assert "state file" in capsys.readouterr().err


# -- real processes into the real API --------------------------------------------------------
def _tail_args(log, api, tmp_path, model):
    return [COLLAPSEWATCH, "collect", "tail", str(log), "--model", model, "--poll", "0.05",
            "--collapsewatch-url", api.url, "--state-file", str(tmp_path / "tail-state.json"),
            "--spool-dir", str(tmp_path / "spool")]


def _texts(database_url, model) -> Counter:
    return Counter(r[1] for r in stored(database_url, model))


def test_cli_tail_through_rotation_and_truncation_stores_each_line_once(
        database_url, service_env, tmp_path):
    model = "tailed"
    key = create_model(model)
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    api = ApiServer(service_env, tmp_path)
    api.start()
    env = {**service_env, "COLLAPSEWATCH_INGEST_KEY": key}
    try:
        _write(log, _lines(0, 1000))
        with process(_tail_args(log, api, tmp_path, model), tmp_path / "tail.log", env=env):
            wait_until(lambda: TailState.load(tmp_path / "tail-state.json"), 60,
                       "the tailer to start")
            _write(log, _lines(1000, 1500))
            os.rename(log, log.with_name("app.log.1"))
            _write(log, _lines(1500, 2500), mode="w")
            # copytruncate-style: only lines the tailer has read survive a truncation
            wait_until(lambda: sum(_texts(database_url, model).values()) >= 2500, 60,
                       "lines before the truncation")
            _write(log, _lines(2500, 3000), mode="w")
            wait_until(lambda: sum(_texts(database_url, model).values()) >= 3000, 60,
                       "every line")
    finally:
        api.stop()
    assert _texts(database_url, model) == Counter(f"line {i}" for i in range(3000))


def test_cli_tail_killed_and_restarted_loses_and_doubles_nothing(
        database_url, service_env, tmp_path):
    model = "tail-kill9"
    key = create_model(model)
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    api = ApiServer(service_env, tmp_path)
    api.start()
    env = {**service_env, "COLLAPSEWATCH_INGEST_KEY": key}
    stop_writing = threading.Event()

    def writer():  # a steady stream while the tailer dies and comes back
        i = 0
        while not stop_writing.is_set() and i < 6000:
            _write(log, _lines(i, i + 100))
            i += 100
            stop_writing.wait(0.02)

    thread = threading.Thread(target=writer)
    try:
        thread.start()
        with process(_tail_args(log, api, tmp_path, model), tmp_path / "tail-1.log",
                     env=env) as tailer:
            wait_until(lambda: sum(_texts(database_url, model).values()) >= 1500, 60,
                       "lines before the kill")
            assert TailState.load(tmp_path / "tail-state.json") is not None
            tailer.kill9()
        thread.join(60)
        os.rename(log, log.with_name("app.log.1"))  # rotated while the tailer is down
        _write(log, _lines(6000, 6500), mode="w")
        with process(_tail_args(log, api, tmp_path, model), tmp_path / "tail-2.log", env=env):
            wait_until(lambda: sum(_texts(database_url, model).values()) >= 6500, 90,
                       "every line after the restart")
    finally:
        stop_writing.set()
        thread.join(10)
        api.stop()
    assert _texts(database_url, model) == Counter(f"line {i}" for i in range(6500))
