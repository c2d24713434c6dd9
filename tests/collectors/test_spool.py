"""The on-disk spool: order, segments, torn tails, the byte bound, one owner."""

from __future__ import annotations

import logging

import pytest

from collectors.spool import DiskSpool, MemorySpool, SpoolError


def _batch(i: int, size: int = 10) -> bytes:
    return (f'[{{"id":"{i}","text":"' + "x" * size + '"}]').encode()


def _drain(spool) -> list[bytes]:
    out = []
    while (frame := spool.peek()) is not None:
        out.append(frame.payload)
        spool.ack()
    return out


def test_batches_come_back_oldest_first_across_segments_and_acked_segments_go(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=200)
    batches = [_batch(i, 50) for i in range(10)]
    for b in batches:
        spool.append(b, 1)
    assert spool.pending_records == 10
    assert len(list(tmp_path.glob("*.seg"))) > 3  # ~2 batches per 200-byte segment
    assert _drain(spool) == batches
    assert spool.pending_records == 0 and spool.pending_bytes == 0
    assert not list(tmp_path.glob("*.seg"))
    spool.close()


def test_a_reopened_spool_resumes_after_the_last_acknowledged_batch(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=200)
    batches = [_batch(i, 50) for i in range(7)]
    for b in batches:
        spool.append(b, 3)
    for _ in range(3):
        spool.peek()
        spool.ack()
    spool.close()
    again = DiskSpool(tmp_path, segment_bytes=200)
    assert again.pending_records == 4 * 3
    again.append(_batch(99), 1)  # appends after a restart go behind the old batches
    assert _drain(again) == batches[3:] + [_batch(99)]
    again.close()


def test_a_torn_batch_at_the_end_is_cut_off_when_reopened(tmp_path, caplog):
    spool = DiskSpool(tmp_path)
    for i in range(3):
        spool.append(_batch(i), 1)
    spool.close()
    segment = max(tmp_path.glob("*.seg"))
    whole = segment.stat().st_size
    with open(segment, "ab") as f:  # what a crash in the middle of append leaves
        f.write(b"\x00\x00\x01\x00\x00\x00\x00\x01partial")
    caplog.set_level(logging.WARNING, "collectors.spool")
    again = DiskSpool(tmp_path)
    assert segment.stat().st_size == whole
    assert "torn batch" in caplog.text
    again.append(_batch(3), 1)
    assert _drain(again) == [_batch(i) for i in range(4)]
    again.close()


def test_a_full_spool_drops_the_oldest_batches_and_says_how_many(tmp_path):
    spool = DiskSpool(tmp_path, max_bytes=400, segment_bytes=150)
    dropped = [spool.append(_batch(i, 60), 5) for i in range(8)]
    assert sum(dropped) > 0 and spool.pending_bytes <= 400
    remaining = _drain(spool)
    assert remaining == [_batch(i, 60) for i in range(8 - len(remaining), 8)]
    assert sum(dropped) == 5 * (8 - len(remaining))
    spool.close()


def test_a_spool_directory_is_owned_by_one_process_at_a_time(tmp_path):
    spool = DiskSpool(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        DiskSpool(tmp_path)
    spool.close()
    DiskSpool(tmp_path).close()  # released on close (and by the kernel on kill -9)


def test_a_cursor_pointing_at_a_deleted_segment_starts_at_the_oldest_left(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=100)
    for i in range(4):
        spool.append(_batch(i, 60), 1)
    spool.close()
    (tmp_path / "cursor").write_text("0 0\n")
    again = DiskSpool(tmp_path, segment_bytes=100)
    assert _drain(again) == [_batch(i, 60) for i in range(4)]
    again.close()


def test_new_segments_after_an_empty_spool_are_never_taken_for_acknowledged(tmp_path):
    spool = DiskSpool(tmp_path)
    spool.append(_batch(1), 1)
    _drain(spool)
    spool.close()
    again = DiskSpool(tmp_path)  # cursor points past a segment that no longer exists
    again.append(_batch(2), 1)
    again.close()
    third = DiskSpool(tmp_path)
    assert third.pending_records == 1
    assert _drain(third) == [_batch(2)]
    third.close()


def test_memory_spool_is_bounded_and_counts_what_it_drops():
    spool = MemorySpool(max_bytes=100)
    dropped = sum(spool.append(_batch(i, 20), 2) for i in range(6))
    kept = _drain(spool)
    assert dropped == 2 * (6 - len(kept)) and kept[-1] == _batch(5, 20)
