"""CLI: serve (embedded), api, worker, beat, migrate (production)."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.settings import get_settings


def _configure_logging() -> None:
    from service.logging import configure

    s = get_settings()
    configure(s.log_level, s.log_json)


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.domain.migrate import upgrade

    _configure_logging()
    upgrade()
    print(f"database at {get_settings().resolved_database_url.split('@')[-1]} is up to date")
    return 0


def _announce_listen_host(host: str, port: int | None = None) -> None:
    """Tell the app (and uvicorn's worker processes, and `serve`'s worker) where it
    listens: reads are private off loopback (see service.api.deps.reads_private), and links
    in notifications point there unless PUBLIC_URL is set (Settings.link_base_url)."""
    import os

    os.environ["COLLAPSEWATCH_LISTEN_HOST"] = host
    if port is not None:
        os.environ["COLLAPSEWATCH_LISTEN_PORT"] = str(port)
    get_settings.cache_clear()


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    _announce_listen_host(args.host, args.port)
    _configure_logging()
    uvicorn.run("service.api.app:create_served_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_config=None, access_log=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.demo.embedded import run_embedded

    _announce_listen_host(args.host, args.port)
    _configure_logging()
    return run_embedded(host=args.host, port=args.port, demo=args.demo)


def worker_argv(concurrency: int, pool: str, loglevel: str,
                hostname: str | None = None) -> list[str]:
    """The Celery worker command line (also used by `serve` for its embedded worker)."""
    import os

    from service.broker import BEAT_QUEUE, DEFAULT_QUEUE

    return [
        "worker", f"--concurrency={concurrency}", f"--pool={pool}",
        f"--loglevel={loglevel}", f"--queues={DEFAULT_QUEUE},{BEAT_QUEUE}",
        # several workers on one host need distinct names
        f"--hostname={hostname or f'collapsewatch-{os.getpid()}@%h'}",
        # no cluster chatter: the database coordinates the work
        "--without-gossip", "--without-mingle",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    from service.broker import celery_app, reconfigure
    from service.demo.embedded import follow_parent

    _configure_logging()
    reconfigure()
    follow_parent()
    concurrency = args.concurrency or os.cpu_count() or 1
    if concurrency < 1:
        from service.cli import CliError

        raise CliError(f"--concurrency must be at least 1, got {concurrency}")
    celery_app.worker_main(worker_argv(concurrency, args.pool, get_settings().log_level,
                                       args.hostname))
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from service.broker import celery_app, reconfigure
    from service.demo.embedded import follow_parent

    _configure_logging()
    reconfigure()
    follow_parent()
    settings = get_settings()
    schedule = args.schedule or str(settings.data_dir / "celerybeat-schedule")
    Path(schedule).parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", f"--schedule={schedule}", f"--loglevel={settings.log_level}"])
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="embedded mode: SQLite, worker, beat, API and web page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--demo", action="store_true", help="seed demo models (one healthy, one collapsing)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("api", help="production API process")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="production Celery worker: scores windows, evaluates "
                                      "alerts, sends notifications")
    p.add_argument("--concurrency", type=int, default=None,
                   help="worker processes (default: the number of CPUs)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--hostname", default=None,
                   help="Celery node name (default: collapsewatch-<pid>@<host>)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("beat", help="production scheduler: plans windows, reaps stuck work, "
                                    "checks liveness, sweeps the notification outbox")
    p.add_argument("--schedule", default=None,
                   help="beat state file (default: <data dir>/celerybeat-schedule)")
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.set_defaults(func=cmd_migrate)
