"""Follow a JSONL log like ``tail -F`` and record one sample per line through the SDK.

- **Rotation** (the file renamed and a new one created at the path): the old file is read to
  its end, then the new one from its start. Rotated while the tailer was down: the old file is
  found again by its inode among the files next to the path, finished, then the new one read.
- **Truncation** (same file, now shorter than the offset, or its first line changed): read
  again from the start. Lines appended and truncated away between two polls cannot be seen
  (``copytruncate`` rotation has that gap by design; prefer rename rotation), nor can a
  file truncated and refilled past the offset with the very same first line.
- A file rotated twice between two polls (``poll_interval``, default 0.25 s) is skipped: only
  the file the tailer had open and the one now at the path are read.
- **Offsets persist** in a small state file (device, inode, offset, truncation generation,
  first-line fingerprint), written only after the SDK's ``flush()`` says every line before
  the offset was acknowledged or durably spooled. A restart resumes there: nothing skipped.
- **Ids come from the position** (``tail:<dev>:<inode>:<generation>:<fingerprint>:<offset>``,
  or a field of the line with ``id_field``), so lines read again after a crash are recognised
  by the server as duplicates: nothing doubled.
- **Bad lines** (not JSON, not an object, the text field missing or not a string, longer than
  ``max_line_bytes``) are skipped, counted and logged with their offset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("collectors.tail")

READ_BYTES = 64 * 1024  # small reads keep checkpoints close to checkpoint_lines
FINGERPRINT_BYTES = 1024


class Recorder(Protocol):
    def record(self, text: str, prompt: str | None = ..., id: str | None = ...,
               attributes: dict[str, Any] | None = ..., timestamp: Any = ...) -> bool: ...

    def flush(self, timeout: float | None = ...) -> bool: ...


@dataclass
class TailState:
    """Where the tailer is: persisted after every durable checkpoint."""

    path: str
    dev: int
    ino: int
    offset: int
    generation: int = 0
    fingerprint: str | None = None  # hash of the first line (or its first 1 KiB)

    @classmethod
    def load(cls, path: Path) -> TailState | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"state file {path} is unreadable ({exc}); move it away to start "
                             "over from the beginning of the log") from exc

    def save(self, path: Path) -> None:
        """Atomically (write, fsync, rename): a crash leaves the old or the new state."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass
class TailStats:
    lines: int = 0
    recorded: int = 0
    bad_lines: int = 0
    rotations: int = 0
    truncations: int = 0
    checkpoints: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BadLine(ValueError):
    """A log line that cannot become a sample; the message says why."""


@dataclass
class LineFormat:
    """Which JSON fields of a log line become the sample."""

    text_field: str = "text"
    prompt_field: str | None = None
    id_field: str | None = None
    timestamp_field: str | None = None
    attribute_fields: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)  # added to every sample

    def parse(self, line: bytes) -> dict[str, Any]:
        """Keyword arguments for ``record()`` (without the id when there is no id field)."""
        try:
            obj = json.loads(line)
        except ValueError as exc:  # also invalid UTF-8
            raise BadLine(f"not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise BadLine(f"expected a JSON object, got {type(obj).__name__}")
        text = obj.get(self.text_field)
        if not isinstance(text, str):
            raise BadLine(f"field {self.text_field!r} is missing or not a string")
        out: dict[str, Any] = {"text": text}
        if self.prompt_field is not None:
            prompt = obj.get(self.prompt_field)
            if prompt is not None and not isinstance(prompt, str):
                raise BadLine(f"field {self.prompt_field!r} is not a string")
            out["prompt"] = prompt
        if self.id_field is not None:
            sample_id = obj.get(self.id_field)
            if isinstance(sample_id, int) and not isinstance(sample_id, bool):
                sample_id = str(sample_id)
            if not isinstance(sample_id, str) or not sample_id or len(sample_id) > 200:
                raise BadLine(f"field {self.id_field!r} is missing or not an id "
                              "(a string of 1 to 200 characters)")
            out["id"] = sample_id
        if self.timestamp_field is not None:
            ts = obj.get(self.timestamp_field)
            if isinstance(ts, int | float) and not isinstance(ts, bool):
                out["timestamp"] = float(ts)
            elif ts is not None:
                raise BadLine(f"field {self.timestamp_field!r} must be Unix seconds")
        attributes = dict(self.attributes)
        for name in self.attribute_fields:
            if name in obj:
                attributes[name] = obj[name]
        if attributes:
            out["attributes"] = attributes
        return out


def _fingerprint(first: bytes) -> str:
    return hashlib.blake2b(first, digest_size=4).hexdigest()


def _first_line(fd: int) -> bytes | None:
    """The first line (up to 1 KiB) of an open file; None while it is still being written."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    end = head.find(b"\n")
    if end >= 0:
        return head[:end]
    return head if len(head) >= FINGERPRINT_BYTES else None


def find_by_inode(path: Path, dev: int, ino: int) -> Path | None:
    """A file next to ``path`` that is the given inode (where a rotation moved it)."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return None
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_ino == ino and st.st_dev == dev and entry.is_file(follow_symlinks=False):
            return Path(entry.path)
    return None


@dataclass
class _Open:
    """The file being read and where."""

    fd: int
    path: Path
    dev: int
    ino: int
    offset: int                 # of the first byte not yet consumed as a line
    generation: int = 0
    fingerprint: str | None = None
    buffer: bytearray = field(default_factory=bytearray)
    skipping: bool = False      # inside an over-long line: drop bytes up to its newline
    rotated: bool = False       # no longer at the path: finish it, then open the path


class Tailer:
    """Follow ``path``; see the module documentation for the guarantees."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        recorder: Recorder,
        state_file: str | os.PathLike[str],
        *,
        line_format: LineFormat | None = None,
        start_at: str = "beginning",
        poll_interval: float = 0.25,
        checkpoint_lines: int = 1000,
        checkpoint_seconds: float = 1.0,
        flush_timeout: float = 30.0,
        max_line_bytes: int = 1024 * 1024,
        stop: threading.Event | None = None,
    ) -> None:
        if start_at not in ("beginning", "end"):
            raise ValueError("start_at must be 'beginning' or 'end'")
        self.path = Path(path).absolute()
        self.recorder = recorder
        self.state_file = Path(state_file)
        self.format = line_format or LineFormat()
        self.start_at = start_at
        self.poll_interval = poll_interval
        self.checkpoint_lines = checkpoint_lines
        self.checkpoint_seconds = checkpoint_seconds
        self.flush_timeout = flush_timeout
        self.max_line_bytes = max_line_bytes
        self.stop = stop or threading.Event()
        self.stats = TailStats()
        self._cur: _Open | None = None
        self._pending = 0              # lines recorded since the last checkpoint
        self._last_checkpoint = time.monotonic()
        self._saved: tuple | None = None  # what the state file says now
        self._bad_window_start = 0.0
        self._bad_in_window = 0

    # -- public ----------------------------------------------------------------------------
    def run(self, exit_at_eof: bool = False) -> TailStats:
        """Follow until ``stop`` is set (or, with ``exit_at_eof``, until the end of the file)."""
        try:
            self._resume()
            # the file's identity goes to the state file at once: a crash before the first
            # checkpoint must still find this file again if it is rotated meanwhile
            self._checkpoint()
            while not self.stop.is_set():
                if self._cur is None:
                    if not self._open_path(offset=0, generation=0):
                        if exit_at_eof:
                            break
                        self.stop.wait(self.poll_interval)
                        continue
                    self._checkpoint()
                got = self._read_available()
                if self._pending and (self._pending >= self.checkpoint_lines or time.monotonic()
                                      - self._last_checkpoint >= self.checkpoint_seconds):
                    self._checkpoint()
                if got:
                    continue
                self._checkpoint()
                if self._follow_changes():
                    continue
                if exit_at_eof:
                    break
                self.stop.wait(self.poll_interval)
            self._checkpoint()
        finally:
            self._close_current()
        return self.stats

    # -- opening and resuming --------------------------------------------------------------
    def _resume(self) -> None:
        state = TailState.load(self.state_file)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if state is None:
            if st is not None:
                offset = st.st_size if self.start_at == "end" else 0
                self._open_path(offset=offset, generation=0)
                if offset:  # begin after the last complete line
                    self._cur.offset = self._last_newline_before(offset)
            return
        if st is not None and (st.st_dev, st.st_ino) == (state.dev, state.ino):
            self._open_path(offset=state.offset, generation=state.generation,
                            fingerprint=state.fingerprint)
            self._check_truncation()
            return
        old = find_by_inode(self.path, state.dev, state.ino)
        if old is not None:
            log.info("log was rotated while the tailer was down; finishing the old file first",
                     extra={"old": str(old), "offset": state.offset})
            self._open_file(old, state.offset, state.generation, state.fingerprint)
            self._check_truncation()
            self._cur.rotated = True
            return
        if st is not None or state.offset:
            log.warning("the file the tailer was reading is gone; lines it had after the saved "
                        "offset cannot be read", extra={"path": str(self.path),
                                                         "offset": state.offset})
        if st is not None:
            self._open_path(offset=0, generation=0)

    def _open_path(self, offset: int, generation: int, fingerprint: str | None = None) -> bool:
        try:
            self._open_file(self.path, offset, generation, fingerprint)
        except FileNotFoundError:
            return False
        return True

    def _open_file(self, path: Path, offset: int, generation: int,
                   fingerprint: str | None) -> None:
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        self._cur = _Open(fd=fd, path=path, dev=st.st_dev, ino=st.st_ino, offset=offset,
                          generation=generation, fingerprint=fingerprint)

    def _last_newline_before(self, offset: int) -> int:
        start = max(0, offset - 65536)
        chunk = os.pread(self._cur.fd, offset - start, start)
        at = chunk.rfind(b"\n")
        return start + at + 1 if at >= 0 else start

    def _close_current(self) -> None:
        if self._cur is not None:
            os.close(self._cur.fd)
            self._cur = None

    # -- reading ---------------------------------------------------------------------------
    def _read_available(self) -> bool:
        """Read what the file has past the buffer; record complete lines. True if it had data."""
        cur = self._cur
        position = cur.offset + len(cur.buffer)
        data = os.pread(cur.fd, READ_BYTES, position)
        if not data:
            return False
        cur.buffer += data
        self._consume_lines(cur, final=False)
        return True

    def _consume_lines(self, cur: _Open, final: bool) -> None:
        buf = cur.buffer
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._line(cur, bytes(buf[start:end]), cur.offset + start)
            start = end + 1
        if final and start < len(buf):  # the last line of a rotated file has no newline
            self._line(cur, bytes(buf[start:]), cur.offset + start)
            start = len(buf)
        del buf[:start]
        cur.offset += start
        if len(buf) > self.max_line_bytes:
            if not cur.skipping:
                self._bad(cur.offset, f"line longer than {self.max_line_bytes} bytes")
            cur.skipping = True
            cur.offset += len(buf)
            buf.clear()

    def _line(self, cur: _Open, line: bytes, offset: int) -> None:
        if cur.skipping:  # the end of an over-long line
            cur.skipping = False
            return
        if offset == 0 and cur.fingerprint is None:
            cur.fingerprint = _fingerprint(line[:FINGERPRINT_BYTES])
        if not line.strip():
            return
        self.stats.lines += 1
        if len(line) > self.max_line_bytes:
            self._bad(offset, f"line longer than {self.max_line_bytes} bytes")
            return
        try:
            sample = self.format.parse(line)
        except BadLine as exc:
            self._bad(offset, str(exc))
            return
        if cur.fingerprint is None:
            first = _first_line(cur.fd)
            cur.fingerprint = _fingerprint(first or b"")
        sample.setdefault(
            "id", f"tail:{cur.dev:x}:{cur.ino:x}:{cur.generation}:{cur.fingerprint}:{offset}")
        if self.recorder.record(**sample):
            self.stats.recorded += 1
        self._pending += 1

    def _bad(self, offset: int, reason: str) -> None:
        self.stats.bad_lines += 1
        now = time.monotonic()
        # one warning per bad line, but at most 10 a second: a wrong --field must not flood
        if now - self._bad_window_start >= 1.0:
            self._bad_window_start = now
            self._bad_in_window = 0
        self._bad_in_window += 1
        if self._bad_in_window <= 10:
            log.warning("skipped a bad log line at offset %d of %s: %s", offset,
                        self._cur.path, reason, extra={
                "path": str(self._cur.path), "offset": offset, "reason": reason,
                "bad_lines": self.stats.bad_lines})

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoint(self) -> None:
        """Make everything recorded durable, then save the offset (never the other way round)."""
        cur = self._cur
        if cur is None:
            return
        if self._pending:
            while not self.recorder.flush(self.flush_timeout):
                log.warning("samples are not durable yet (collapsewatch unreachable and no "
                            "spool?); holding the offset and waiting", extra={
                                "path": str(cur.path), "pending_lines": self._pending})
                if self.stop.is_set():
                    return
        state = TailState(path=str(self.path), dev=cur.dev, ino=cur.ino, offset=cur.offset,
                          generation=cur.generation, fingerprint=cur.fingerprint)
        key = tuple(asdict(state).values())
        self._pending = 0
        if key == self._saved:
            return
        state.save(self.state_file)
        self._saved = key
        self._last_checkpoint = time.monotonic()
        self.stats.checkpoints += 1

    # -- rotation and truncation -----------------------------------------------------------
    def _check_truncation(self) -> bool:
        """Start the current file over when it got shorter or its first line changed."""
        cur = self._cur
        size = os.fstat(cur.fd).st_size
        truncated = size < cur.offset + len(cur.buffer)
        if not truncated and cur.fingerprint is not None and cur.offset > 0:
            first = _first_line(cur.fd)
            truncated = first is None or _fingerprint(first) != cur.fingerprint
        if not truncated:
            return False
        log.warning("log was truncated; reading it again from the start", extra={
            "path": str(cur.path), "offset": cur.offset, "size": size})
        self.stats.truncations += 1
        cur.generation += 1
        cur.offset = 0
        cur.buffer.clear()
        cur.skipping = False
        cur.fingerprint = None
        return True

    def _follow_changes(self) -> bool:
        """At the end of the data: True when there is something new to read (truncation or
        rotation handled), False to wait."""
        if self._check_truncation():
            return True
        cur = self._cur
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed, the new file not created yet: keep the old one open
        if (st.st_dev, st.st_ino) == (cur.dev, cur.ino) and not cur.rotated:
            return False
        # rotated: whatever the old file still has, then the new file from its start
        while self._read_available():
            pass
        self._consume_lines(cur, final=True)
        self._checkpoint()
        log.info("log was rotated; following the new file", extra={"path": str(self.path)})
        self.stats.rotations += 1
        self._close_current()
        if self._open_path(offset=0, generation=0):
            self._checkpoint()
        return True
