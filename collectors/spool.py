"""Where batches wait while the server cannot take them: a durable on-disk spool.

A spool directory holds::

    lock                        flock()ed by the one process that owns the spool
    cursor                      "<segment> <offset>": the first frame not yet acknowledged
    00000000000000000001.seg    append-only segments of frames, oldest first

A frame is a 12-byte header (payload length, record count, CRC-32 of the payload; three
big-endian u32) followed by the payload (the batch as a JSON array). ``append`` writes one
frame and fsyncs it before returning, so a batch counted as spooled survives kill -9 and
power loss. A crash in the middle of an append leaves a torn frame at the end of the newest
segment; opening the spool cuts it off (that batch was never counted as spooled).

The cursor is replaced atomically (write + rename) but not fsynced: after a power loss it may
point at a frame that was already acknowledged, which is then sent again. Sample ids make that
harmless (the server counts it as a duplicate). Segments before the cursor are deleted.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX only; on other systems the spool is not protected against a second owner
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("collectors.spool")

HEADER = struct.Struct(">III")
SEGMENT_SUFFIX = ".seg"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolError(RuntimeError):
    """The spool directory cannot be used (already owned, not writable)."""


@dataclass(frozen=True)
class Frame:
    """One spooled batch: a JSON array of samples and how many it holds."""

    payload: bytes
    count: int


class MemorySpool:
    """The same interface as :class:`DiskSpool`, kept in memory (lost when the process dies).

    Used when no spool directory is configured. Bounded by ``max_bytes``: when full, the oldest
    batches are dropped and counted (``append`` returns how many records it dropped).
    """

    durable = False

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self.pending_bytes = 0
        self.pending_records = 0

    def append(self, payload: bytes, count: int) -> int:
        dropped = 0
        while self._frames and self.pending_bytes + len(payload) > self.max_bytes:
            dropped += self._pop().count
        self._frames.append(Frame(payload, count))
        self.pending_bytes += len(payload)
        self.pending_records += count
        return dropped

    def peek(self) -> Frame | None:
        return self._frames[0] if self._frames else None

    def ack(self) -> None:
        self._pop()

    def _pop(self) -> Frame:
        frame = self._frames.popleft()
        self.pending_bytes -= len(frame.payload)
        self.pending_records -= frame.count
        return frame

    def close(self) -> None:
        return None


def _segment_name(number: int) -> str:
    return f"{number:020d}{SEGMENT_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_frame(f, offset: int) -> tuple[Frame | None, int]:
    """The frame at ``offset`` and the offset after it; (None, offset) when torn or absent."""
    f.seek(offset)
    header = f.read(HEADER.size)
    if len(header) < HEADER.size:
        return None, offset
    length, count, crc = HEADER.unpack(header)
    payload = f.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None, offset
    return Frame(payload, count), offset + HEADER.size + length


class DiskSpool:
    """Append-only segment files with fsync per batch; replayed oldest first.

    ``max_bytes`` bounds the disk used: when an append would exceed it, the oldest pending
    batches are dropped and counted (``append`` returns how many records it dropped).
    One process owns a spool directory at a time (an exclusive ``flock``).
    """

    durable = True

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        self._lock_fd = self._take_lock()
        self._segments: list[int] = []        # pending segment numbers, oldest first
        self._sizes: dict[int, int] = {}      # valid bytes per segment
        self._counts: dict[int, int] = {}     # records per segment not yet acknowledged
        self._read_seg = 0
        self._read_off = 0
        self._head: tuple[Frame, int] | None = None  # frame at the cursor and its end offset
        self._reader = None
        self._writer = None
        self.pending_bytes = 0
        self.pending_records = 0
        self._recover()

    # -- opening -------------------------------------------------------------------------
    def _take_lock(self) -> int:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                raise SpoolError(
                    f"spool directory {self.directory} is in use by another process; "
                    "give each collector its own spool directory"
                ) from exc
        return fd

    def _recover(self) -> None:
        numbers = sorted(
            int(p.name[: -len(SEGMENT_SUFFIX)])
            for p in self.directory.glob("*" + SEGMENT_SUFFIX)
            if p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        seg, off = self._read_cursor()
        for n in [n for n in numbers if n < seg]:  # acknowledged before a crash
            (self.directory / _segment_name(n)).unlink(missing_ok=True)
        numbers = [n for n in numbers if n >= seg]
        if numbers and numbers[0] != seg:  # cursor points at a deleted segment: start over
            seg, off = numbers[0], 0
        for n in numbers:
            size, count = self._scan(n, off if n == seg else 0, repair=(n == numbers[-1]))
            start = min(off, size) if n == seg else 0
            self._segments.append(n)
            self._sizes[n] = size
            self._counts[n] = count
            self.pending_bytes += size - start
            self.pending_records += count
        # with nothing pending, new segments are numbered after the cursor's, so they can never
        # be mistaken for acknowledged ones
        self._read_seg, self._read_off = (numbers[0], min(off, self._sizes[numbers[0]])) \
            if numbers else (seg, 0)
        if self.pending_records:
            log.info("spool has pending batches", extra={
                "spool": str(self.directory), "records": self.pending_records,
                "bytes": self.pending_bytes})

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seg, off = (self.directory / "cursor").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return 0, 0

    def _scan(self, number: int, start: int, repair: bool) -> tuple[int, int]:
        """Valid size and pending record count of a segment; cut a torn tail when ``repair``."""
        path = self.directory / _segment_name(number)
        count = 0
        with open(path, "rb") as f:
            offset = 0
            while True:
                frame, end = _read_frame(f, offset)
                if frame is None:
                    break
                if offset >= start:
                    count += frame.count
                offset = end
            actual = f.seek(0, os.SEEK_END)
        if offset < actual:
            if repair:
                log.warning("cut a torn batch at the end of a spool segment", extra={
                    "segment": str(path), "valid_bytes": offset, "torn_bytes": actual - offset})
                with open(path, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
            else:
                log.error("spool segment is corrupt after a valid prefix; the rest is skipped",
                          extra={"segment": str(path), "valid_bytes": offset})
        return offset, count

    # -- writing -------------------------------------------------------------------------
    def append(self, payload: bytes, count: int) -> int:
        """Write one batch durably (fsync); returns the number of old records dropped."""
        dropped = 0
        while self.pending_records and self.pending_bytes + len(payload) > self.max_bytes:
            dropped += self._drop_head()
        frame = HEADER.pack(len(payload), count, zlib.crc32(payload)) + payload
        writer = self._writer_for(len(frame))
        writer.write(frame)
        writer.flush()
        os.fsync(writer.fileno())
        number = self._segments[-1]
        self._sizes[number] += len(frame)
        self._counts[number] += count
        self.pending_bytes += len(frame)
        self.pending_records += count
        return dropped

    def _writer_for(self, frame_bytes: int):
        if self._writer is not None:
            size = self._sizes[self._segments[-1]]
            if size == 0 or size + frame_bytes <= self.segment_bytes:
                return self._writer
            self._writer.close()
            self._writer = None
        # a segment left from an earlier run is never appended to: start the next one
        number = (self._segments[-1] if self._segments else self._read_seg) + 1
        if not self._segments:
            self._read_seg, self._read_off = number, 0
        # held open across appends; closed when the segment is full or the spool closes
        self._writer = open(self.directory / _segment_name(number), "ab")  # noqa: SIM115
        _fsync_dir(self.directory)
        self._segments.append(number)
        self._sizes[number] = 0
        self._counts[number] = 0
        return self._writer

    # -- reading -------------------------------------------------------------------------
    def peek(self) -> Frame | None:
        """The oldest batch not yet acknowledged, or None when the spool is empty."""
        if self._head is not None:
            return self._head[0]
        while self._segments:
            number = self._segments[0]
            if self._read_off < self._sizes[number]:
                if self._reader is None or self._reader[0] != number:
                    self._close_reader()
                    path = self.directory / _segment_name(number)
                    self._reader = (number, open(path, "rb"))  # noqa: SIM115 - kept across peeks
                frame, end = _read_frame(self._reader[1], self._read_off)
                if frame is not None:
                    self._head = (frame, end)
                    return frame
                # validated when opened or written by us: only a disk fault gets here
                log.error("unreadable batch in spool segment; skipping the rest of it", extra={
                    "segment": number, "offset": self._read_off})
                self.pending_bytes -= self._sizes[number] - self._read_off
                self.pending_records -= self._counts[number]
                self._counts[number] = 0
                self._read_off = self._sizes[number]
            if not self._finish_segment():
                return None
        return None

    def ack(self) -> None:
        """Forget the batch returned by :meth:`peek` (the server has it)."""
        if self._head is None:
            raise RuntimeError("ack() without a peeked batch")
        frame, end = self._head
        self._head = None
        number = self._segments[0]
        self.pending_bytes -= end - self._read_off
        self.pending_records -= frame.count
        self._counts[number] -= frame.count
        self._read_off = end
        if self._read_off >= self._sizes[number]:
            self._finish_segment()  # writes the cursor
        else:
            self._write_cursor()

    def _drop_head(self) -> int:
        frame = self.peek()
        if frame is None:
            return 0
        self.ack()
        return frame.count

    def _finish_segment(self) -> bool:
        """Delete the fully read oldest segment; False when it is still being written."""
        number = self._segments[0]
        if self._read_off < self._sizes[number]:
            return True
        if self._reader is not None and self._reader[0] == number:
            self._close_reader()
        if len(self._segments) == 1 and self._writer is not None:
            # caught up with the writer: start a fresh segment on the next append
            self._writer.close()
            self._writer = None
        self._segments.pop(0)
        del self._sizes[number], self._counts[number]
        (self.directory / _segment_name(number)).unlink(missing_ok=True)
        if self._segments:
            self._read_seg, self._read_off = self._segments[0], 0
        else:
            self._read_seg, self._read_off = number, 0
        self._write_cursor()
        return bool(self._segments)

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{self._read_seg} {self._read_off}\n")
        os.replace(tmp, self.directory / "cursor")

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def close(self) -> None:
        self._close_reader()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
