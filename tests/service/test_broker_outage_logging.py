"""A broker outage is one log line per component, not a traceback per beat tick."""

from __future__ import annotations

import logging

from kombu.exceptions import OperationalError

from service.broker import BrokerOutageFilter


def _record(name: str, exc: BaseException) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__)
    return logging.LogRecord(name, logging.ERROR, __file__, 1, "Message Error: %s", ("x",),
                             info)


def test_one_line_per_component_during_an_outage():
    f = BrokerOutageFilter(quiet_seconds=60)
    err = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    first = _record("celery.beat", err)
    assert f.filter(first)
    assert first.exc_info is None and "broker unreachable" in first.getMessage()
    assert "Connection refused" in first.getMessage()
    # repeats from the same component are dropped; another component gets its own line
    assert not any(f.filter(_record("celery.beat", err)) for _ in range(10))
    assert f.filter(_record("celery.worker.consumer.consumer", err))


def test_a_wrapped_connection_error_counts_and_other_errors_keep_their_traceback():
    f = BrokerOutageFilter()
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("could not publish") from inner
    except RuntimeError as outer:
        wrapped = outer
    assert f.filter(rec := _record("kombu.connection", wrapped)) and rec.exc_info is None
    other = _record("celery.beat", ValueError("bad schedule"))
    assert f.filter(other) and other.exc_info is not None
    # our own loggers are never touched
    ours = _record("collapsewatch.worker", OperationalError("down"))
    assert f.filter(ours) and ours.exc_info is not None
