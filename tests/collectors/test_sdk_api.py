"""The SDK against the real API process: outages and kill -9, checked in the samples table."""

from __future__ import annotations

import json
import sys
import time

from tests.collectors.harness import ApiServer, create_model, stored, timestamps, wait_until
from tests.support import process

COUNT = 10_000


def _events(log_path) -> list[dict]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _producer(api: ApiServer, tmp_path, model: str) -> list[str]:
    return [sys.executable, "-m", "tests.collectors.producer", "--url", api.url,
            "--model", model, "--count", str(COUNT), "--rate", "2500",
            "--spool", str(tmp_path / "spool"), "--checkpoint", str(tmp_path / "checkpoint")]


def _assert_each_once_in_order(database_url: str, model: str, since: float) -> None:
    rows = stored(database_url, model)
    ids = [r[0] for r in rows]
    assert len(ids) == COUNT, f"{len(ids)} stored, {len(set(ids))} distinct"
    assert set(ids) == {f"r{i}" for i in range(COUNT)}
    # spooled batches are replayed oldest first, so the server stores them in record order
    assert [r[2]["i"] for r in rows] == list(range(COUNT))
    # the SDK sends Unix seconds; the server stores them as the sample's timestamp
    stamps = timestamps(database_url, model)
    assert len(stamps) == COUNT and all(since - 1 <= t <= time.time() + 1 for t in stamps)


def test_server_down_during_a_stream_then_up_stores_every_record_once(
        database_url, service_env, tmp_path):
    model = "sdk-outage"
    key = create_model(model)
    began = time.time()
    api = ApiServer(service_env, tmp_path)
    api.start()
    log = tmp_path / "producer.log"
    try:
        with process(_producer(api, tmp_path, model), log,
                     env={"COLLAPSEWATCH_INGEST_KEY": key}) as producer:
            wait_until(lambda: len(stored(database_url, model)) >= 1500, 60, "first samples")
            api.kill9()  # down hard: connections refused, the answer to a batch may be lost
            wait_until(lambda: any(e.get("spool_pending", 0) > 500 for e in _events(log)), 60,
                       "the producer to spool while the server is down")
            api.start()
            assert producer.popen.wait(180) == 0, producer.log()[-3000:]
    finally:
        api.stop()
    finished = [e for e in _events(log) if e["event"] == "finished"][-1]
    assert finished["spooled"] > 0 and finished["replayed"] > 0
    assert finished["dropped"] == 0 and finished["rejected"] == 0
    assert finished["spool_pending"] == 0 and finished["queued"] == 0
    _assert_each_once_in_order(database_url, model, began)


def test_kill9_of_the_collector_mid_stream_then_restart_loses_and_doubles_nothing(
        database_url, service_env, tmp_path):
    model = "sdk-kill9"
    key = create_model(model)
    began = time.time()
    api = ApiServer(service_env, tmp_path)
    api.start()
    env = {"COLLAPSEWATCH_INGEST_KEY": key}
    try:
        first_log = tmp_path / "producer-1.log"
        with process(_producer(api, tmp_path, model), first_log, env=env) as producer:
            wait_until(lambda: len(stored(database_url, model)) >= 1000, 60, "first samples")
            api.stop()
            # killed while batches wait in the spool and samples wait in memory
            wait_until(lambda: any(e.get("spool_pending", 0) > 1000
                                   for e in _events(first_log)), 60, "spooling")
            producer.kill9()
        segments = list((tmp_path / "spool").glob("*.seg"))
        assert segments, "the killed collector left no spool behind"
        checkpoint = int((tmp_path / "checkpoint").read_text())
        assert 0 < checkpoint < COUNT

        api.start()
        second_log = tmp_path / "producer-2.log"
        with process(_producer(api, tmp_path, model), second_log, env=env) as producer:
            assert producer.popen.wait(180) == 0, producer.log()[-3000:]
    finally:
        api.stop()
    started = next(e for e in _events(second_log) if e["event"] == "started")
    assert started["start"] == checkpoint
    assert started["spool_pending"] > 0  # the new process replays what the killed one spooled
    finished = [e for e in _events(second_log) if e["event"] == "finished"][-1]
    assert finished["dropped"] == 0 and finished["spool_pending"] == 0
    _assert_each_once_in_order(database_url, model, began)
    assert not list((tmp_path / "spool").glob("*.seg")), "acknowledged segments are deleted"
