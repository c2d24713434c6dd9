"""The one Celery app of collapsewatch (workers, beat, and whoever enqueues tasks).

The broker only carries ids; the database decides what is due (DESIGN.md). Settings:
``resolved_broker_url`` is the embedded kombu ``sqla+sqlite`` broker next to the SQLite
database by default, or Redis in production.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from service.settings import Settings, get_settings

DEFAULT_QUEUE = "collapsewatch"
# beat tasks get their own queue, so planning, the reaper and liveness checks are not stuck
# behind a backlog of scoring work (workers consume both; kombu rotates between queues)
BEAT_QUEUE = "collapsewatch.beat"

PLAN_WINDOWS = "collapsewatch.plan_windows"
SCORE_WINDOW = "collapsewatch.score_window"
REFERENCE_BANDS = "collapsewatch.reference_bands"
REAP_STUCK = "collapsewatch.reap_stuck"
APPLY_RETENTION = "collapsewatch.apply_retention"
EVALUATE_ALERTS = "collapsewatch.evaluate_alerts"
CHECK_LIVENESS = "collapsewatch.check_liveness"
DELIVER_NOTIFICATION = "collapsewatch.deliver_notification"
SWEEP_OUTBOX = "collapsewatch.sweep_outbox"

BEAT_TASKS = (PLAN_WINDOWS, REAP_STUCK, CHECK_LIVENESS, SWEEP_OUTBOX, APPLY_RETENTION)
# retention deletes in bounded batches; once a minute keeps up with any intake the database
# can take (each pass deletes up to retention_max_batches x retention_batch_rows rows)
RETENTION_INTERVAL_SECONDS = 60.0


def _broker_errors() -> tuple[type[BaseException], ...]:
    """What a publish raises when the broker is unreachable (kombu wraps most of them)."""
    from kombu.exceptions import KombuError
    from sqlalchemy.exc import SQLAlchemyError

    errors: list[type[BaseException]] = [KombuError, OSError, SQLAlchemyError]
    try:
        from redis.exceptions import RedisError

        errors.append(RedisError)
    except ImportError:  # the redis extra is not installed (embedded mode only)
        pass
    return tuple(errors)


BROKER_ERRORS = _broker_errors()


def reaper_interval(settings: Settings) -> float:
    """Run the reaper a few times per scoring lease (so a killed worker's window is sent
    again within about a lease and a third), but not more than every 2 s or less than once
    a minute."""
    shortest = min(settings.reaper_timeout_seconds, settings.scoring_lease_seconds)
    return max(2.0, min(60.0, shortest / 3))


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(task: str, seconds: float) -> dict[str, Any]:
        # a beat message nobody consumed in a few periods is stale: drop it instead of
        # piling up while the workers are down
        return {"task": task, "schedule": seconds,
                "options": {"queue": BEAT_QUEUE, "expires": max(10.0, 5 * seconds)}}

    return {
        "plan-windows": every(PLAN_WINDOWS, settings.plan_interval_seconds),
        "reap-stuck": every(REAP_STUCK, reaper_interval(settings)),
        "apply-retention": every(APPLY_RETENTION, RETENTION_INTERVAL_SECONDS),
        "check-liveness": every(CHECK_LIVENESS,
                                float(getattr(settings, "liveness_interval_seconds", 30.0))),
        "sweep-outbox": every(SWEEP_OUTBOX,
                              float(getattr(settings, "outbox_sweep_interval_seconds", 10.0))),
    }


def broker_transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith("sqla+sqlite"):
        # kombu passes these to sqlalchemy.create_engine (so no ``polling_interval`` here):
        # wait for SQLite's write lock instead of failing with "database is locked"
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = settings.resolved_broker_url
    return {
        "broker_url": broker,
        "broker_transport_options": broker_transport_options(broker),
        "broker_connection_retry_on_startup": True,
        # keep reconnecting while the broker is away; work resumes when it returns
        "broker_connection_max_retries": None,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # a task is acknowledged after it ran, and given back if its worker process dies;
        # one message at a time per process, so a crash loses at most one in-flight task
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # a task running when the broker connection drops finishes its database work (the
        # claim makes the redelivered message a no-op) instead of being cancelled
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_default_queue": DEFAULT_QUEUE,
        # each queue with its own exchange and key: a bare Queue(name) would get Celery's
        # default exchange and routing key, and beat tasks would land in the default queue
        "task_queues": tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                             for name in (DEFAULT_QUEUE, BEAT_QUEUE)),
        "task_routes": {name: {"queue": BEAT_QUEUE} for name in BEAT_TASKS},
        # fail a publish within seconds when the broker is down; the row stays in the
        # database and planning or the reaper sends it again
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2,
                                      "interval_step": 0.5, "interval_max": 1.0},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # remote control needs a broadcast exchange, which the SQL transport lacks
        "worker_enable_remote_control": not broker.startswith("sqla+"),
        "beat_schedule": beat_schedule(settings),
        "timezone": "UTC",
        "enable_utc": True,
    }


def tune_sql_broker(settings: Settings) -> None:
    """Poll the embedded SQL broker every ``embedded_broker_poll_seconds`` (kombu's default
    is 1 s, which adds up to a second to every hop: beat -> planner -> scorer).

    kombu's virtual transports read the interval from ``Transport.polling_interval`` or
    the ``polling_interval`` transport option, but the SQLAlchemy transport hands every
    transport option to ``create_engine``, which rejects that one; so the class default
    is set instead (it only affects the ``sqla`` transport).
    """
    if settings.resolved_broker_url.startswith("sqla+"):
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = float(settings.embedded_broker_poll_seconds)


def create_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("collapsewatch", include=["service.worker.tasks", "service.worker.alert_tasks"])
    app.conf.update(celery_config(settings))
    tune_sql_broker(settings)
    return app


def reconfigure(settings: Settings | None = None) -> None:
    """Re-read settings into the shared app (CLI commands and tests change them) and drop
    connections to the previous broker."""
    settings = settings or get_settings()
    celery_app.conf.update(celery_config(settings))
    tune_sql_broker(settings)
    # Celery keeps its connection and producer pools on private attributes and offers no
    # public way to reset them short of a fork (Celery._after_fork does the same)
    pool = celery_app._pool
    if pool is not None:
        pool.force_close_all()
    celery_app._pool = None
    amqp = celery_app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


celery_app = create_celery_app()


def _connection_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    errors: list[type[BaseException]] = [OperationalError, ConnectionError, TimeoutError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # the redis extra is not installed (embedded mode only)
        pass
    return tuple(errors)


class BrokerOutageFilter(logging.Filter):
    """While the broker is unreachable, Celery and kombu log a full traceback on every beat
    tick and reconnect attempt. This keeps one line per component (logger) and outage:
    the first such record loses its traceback and says what happened; repeats within
    ``quiet_seconds`` are dropped. Anything else passes untouched."""

    def __init__(self, quiet_seconds: float = 300.0) -> None:
        super().__init__()
        self.quiet_seconds = quiet_seconds
        self._errors = _connection_errors()
        self._last: dict[str, float] = {}

    def _broker_error(self, record: logging.LogRecord) -> BaseException | None:
        if not record.name.startswith(("celery", "kombu")) or not record.exc_info:
            return None
        exc = record.exc_info[1]
        for _ in range(5):  # the error is often the cause of a wrapping one
            if exc is None or isinstance(exc, self._errors):
                return exc
            exc = exc.__cause__ or exc.__context__
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = self._broker_error(record)
        if exc is None:
            return True
        import time

        now = time.monotonic()
        last = self._last.get(record.name)
        self._last[record.name] = now
        if last is not None and now - last < self.quiet_seconds:
            return False
        record.msg = (f"broker unreachable ({type(exc).__name__}: {exc}); retrying, "
                      "repeats are not logged")
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # our JSON logs instead of Celery's own formatting (connecting here stops Celery from
    # configuring logging itself)
    from service.logging import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_json)
    outage = BrokerOutageFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(outage)
    if settings.log_level.upper() != "DEBUG":
        # beat logs every message it sends and the worker every task it receives and
        # finishes (several every few seconds): keep their warnings and errors; the
        # pipeline logs its own events ("windows planned", "window scored")
        for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


@signals.worker_init.connect
def _check_secret_key(**_: Any) -> None:
    # once per worker: channel secrets stored in plaintext, or an unusable key
    from service.domain.secrets import warn_if_unconfigured

    warn_if_unconfigured("worker")


@signals.worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # a forked pool process must not share the parent's database connections
    from service.domain.db import reset_engines

    reset_engines()


# environment variables that set numpy's BLAS threads; any of them set: left as they are
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@signals.worker_init.connect
@signals.worker_process_init.connect
def limit_blas_threads(**_: Any) -> int | None:
    """One BLAS thread per worker process unless the environment says otherwise. The
    worker's concurrency is its parallelism; numpy's BLAS (OpenBLAS) otherwise starts a
    thread per CPU in every process, and two processes on two cores then contend
    (benchmarks/processes.py, benchmarks/README.md "BLAS threads per worker process": 2
    processes 65.7 windows/min with the default, 74.9 with one thread; 1 process 39.9 and
    39.6). Returns the limit applied."""
    import os

    if any(os.environ.get(name) for name in BLAS_THREAD_VARIABLES):
        return None
    import numpy  # noqa: F401  (loads BLAS: a limit applies to libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return 1
