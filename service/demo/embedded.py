"""Embedded mode (``collapsewatch serve``): one command runs the whole loop on one machine.

It migrates the SQLite database, starts a real Celery worker (``threads`` pool) and a real
beat as child processes on the embedded broker (kombu ``sqla+sqlite``, a file next to the
database), then serves the API and web page in this process. Ctrl-C or SIGTERM stops the
API, then the worker and beat (SIGTERM: Celery's warm shutdown), and waits for them.
A child that dies on its own is restarted (a bounded number of times), and the children
stop by themselves when `serve` is gone, even after a SIGKILL (:func:`follow_parent`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.embedded")

STOP_TIMEOUT_SECONDS = 20.0
MAX_RESTARTS = 5


# set in the children's environment: the pid of the `serve` process they belong to
PARENT_PID_ENV = "COLLAPSEWATCH_SERVE_PID"
PARENT_POLL_SECONDS = 1.0


def child_env(settings: Settings) -> dict[str, str]:
    """The children use exactly this process's database, broker and data directory."""
    env = dict(os.environ)
    env["COLLAPSEWATCH_DATABASE_URL"] = settings.resolved_database_url
    env["COLLAPSEWATCH_BROKER_URL"] = settings.resolved_broker_url
    env["COLLAPSEWATCH_DATA_DIR"] = str(settings.data_dir.resolve())
    env[PARENT_PID_ENV] = str(os.getpid())
    return env


def follow_parent() -> None:
    """In a worker or beat started by `serve`: stop (SIGTERM to itself, Celery's warm
    shutdown) when `serve` is gone, even if it was killed with SIGKILL and could not stop
    its children. A thread compares the parent pid every second; a no-op outside `serve`."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return
    parent = int(expected)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        log.warning("collapsewatch serve is gone; stopping", extra={"serve_pid": parent})
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-serve", daemon=True).start()


def child_commands(settings: Settings) -> dict[str, list[str]]:

    base = [sys.executable, "-m", "service"]
    return {
        # threads: scoring, planning and alerting share one process and one SQLite file
        "worker": [*base, "worker", "--pool=threads",
                   f"--concurrency={settings.embedded_worker_concurrency}",
                   f"--hostname=collapsewatch-embedded-{os.getpid()}@%h"],
        "beat": [*base, "beat",
                 f"--schedule={(settings.data_dir / 'celerybeat-schedule').resolve()}"],
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen | None = None
    restarts: int = 0

    def start(self) -> None:
        # same process group as `serve`: a terminal's Ctrl-C (or a SIGTERM/SIGKILL sent to
        # the group, as container runtimes do) reaches the children too
        self.popen = subprocess.Popen(self.argv, env=self.env)
        log.info("started", extra={"child": self.name, "pid": self.popen.pid})

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Supervisor:
    """Starts the children, restarts one that dies, stops them all on request."""

    children: list[Child]
    # also true when the API is shutting down (children exit on the same Ctrl-C)
    shutting_down: Callable[[], bool] = lambda: False
    stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _stopping(self) -> bool:
        return self.stopping.is_set() or self.shutting_down()

    def start(self) -> None:
        for child in self.children:
            child.start()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            for child in self.children:
                if child.alive() or self._stopping():
                    continue
                code = child.popen.returncode if child.popen else None
                if child.restarts >= MAX_RESTARTS:
                    log.error("child keeps dying; not restarting it again",
                              extra={"child": child.name, "exit_code": code})
                    continue
                child.restarts += 1
                log.error("child exited; restarting", extra={
                    "child": child.name, "exit_code": code, "restarts": child.restarts})
                time.sleep(min(10.0, 2.0 ** child.restarts))
                if not self._stopping():
                    child.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.stopping.set()
        for child in self.children:
            if child.alive():
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.popen is None:
                continue
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing it",
                            extra={"child": child.name})
                child.popen.kill()
                child.popen.wait(5)
        log.info("worker and beat stopped")


def _start_demo_when_up(server, stop_event: threading.Event, base_url: str) -> None:
    """Run ``service.demo.seed.start_demo`` once the API answers, telling it where it listens."""
    while not server.started and not stop_event.is_set():
        time.sleep(0.1)
    if stop_event.is_set():
        return
    from service.demo import seed as demo

    try:
        demo.start_demo(stop_event, base_url=base_url)
    except Exception:  # the demo must never take the service down
        log.exception("demo stopped with an error")


def run_embedded(host: str, port: int, demo: bool = False) -> int:
    import uvicorn

    from service.domain.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    env = child_env(settings)
    server = uvicorn.Server(uvicorn.Config(
        "service.api.app:create_served_app", factory=True, host=host, port=port, log_config=None,
        access_log=False))
    supervisor = Supervisor([Child(name, argv, env)
                             for name, argv in child_commands(settings).items()],
                            shutting_down=lambda: server.should_exit)
    stop_event = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    # until uvicorn installs its own handlers, SIGTERM should also stop cleanly
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        supervisor.start()
        if demo:
            # the demo feeds this server over HTTP like any client would
            local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            threading.Thread(target=_start_demo_when_up,
                             args=(server, stop_event, f"http://{local}:{port}"),
                             name="demo", daemon=True).start()
        log.info("collapsewatch serving", extra={
            "url": f"http://{host}:{port}", "database": settings.resolved_database_url,
            "broker": settings.resolved_broker_url})
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stop_event.set()
        supervisor.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
