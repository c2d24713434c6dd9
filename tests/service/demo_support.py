"""Polling helpers for the demo tests (a running server answers over HTTP)."""

from __future__ import annotations

import time

import httpx


def models_by_name(base: str) -> dict[str, dict]:
    listed = httpx.get(f"{base}/api/v1/models", timeout=30).json()["models"]
    return {m["name"]: m for m in listed}


def wait_for(what: str, check, timeout: float, proc=None, interval: float = 1.0):
    """Poll ``check()`` until it returns something truthy; fail with the server's log."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"process exited ({proc.popen.returncode}) while waiting for "
                                 f"{what}:\n{proc.log()[-3000:]}")
        try:
            last = check()
        except httpx.HTTPError as exc:  # the server is busy or restarting: poll again
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
                         + (f"\n{proc.log()[-3000:]}" if proc is not None else ""))
