"""The journal on its own: framing, segments, checkpoints, damage, adoption, the byte cap."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.copyrows import COLUMNS_V2, RowEncoder, decode_row, split_rows
from app.events import RawEvent
from app.journal import (
    MAGIC_ROWS_V2,
    MAX_FRAME_ROWS,
    Batch,
    Journal,
    JournalDir,
    Position,
    decode_body,
    decode_chunk,
    encode,
    frame_rows,
    orphans,
    try_lock,
)
from app.settings import FsyncPolicy, Settings
from tests.support import v1_payload
from trackd_links.tokens import KIND_OPEN, KeyRing

events = st.builds(
    RawEvent,
    st.integers(0, 2**128 - 1),
    st.floats(0, 2e9, allow_nan=False),
    st.booleans(),
    st.binary(min_size=1, max_size=300),
    st.one_of(st.none(), st.sampled_from(["127.0.0.1", "2001:db8::1"])),
    st.one_of(st.none(), st.binary(min_size=1, max_size=100)),
    st.one_of(st.none(), st.binary(min_size=1, max_size=600)),
)


@given(events)
def test_encode_decode_round_trip(event: RawEvent) -> None:
    record = encode(event)
    assert decode_body(record[10:]) == event


_RING = KeyRing.from_specs(["t:journal-test-secret-0123456789"])
_PAYLOAD = _RING.verify(_RING.sign_open("campaign", "recipient"), KIND_OPEN) or b""  # claims (rows)
_V1_PAYLOAD = v1_payload(_RING, KIND_OPEN, "campaign", "recipient")  # what format 1 records hold
_ROWS = RowEncoder(Settings())
_CLIENT = _ROWS.client("127.0.0.1", None)
_T0_US = 1_700_000_000_000_000


def make_row(i: int) -> bytes:
    """A real `events` row whose id is `i` (the journal itself treats rows as opaque)."""
    return _ROWS.row(0, i, _T0_US + i, KIND_OPEN, 0, b"UA", _CLIENT, _PAYLOAD)


def row_id(row: bytes) -> int:
    return decode_row(row)["id"].int


def ids_of(batch: Batch) -> list[int]:
    return [row_id(r) for c in batch.chunks for r in split_rows(c.rows)] + [e.id for e in batch.legacy]


def make_event(i: int) -> RawEvent:
    """A format 1 event, as earlier versions wrote them."""
    return RawEvent(i, 1_700_000_000.0 + i, False, _V1_PAYLOAD, "127.0.0.1", None, b"UA")


def open_journal(root: Path, **kw: object) -> Journal:
    options = {"max_bytes": 1 << 20, "segment_bytes": 4096, "fsync": FsyncPolicy.never, "fsync_interval_s": 1.0}
    options.update(kw)
    journal = Journal(root, **options)  # type: ignore[arg-type]
    journal.open()
    return journal


def drain(journal: Journal, batch_rows: int = 1000) -> list[int]:
    """Read and commit everything in `journal`'s own directory, as the writer would; the ids."""
    own = journal.own
    assert own is not None
    got: list[int] = []
    while (batch := own.read(batch_rows, journal.write_position)) is not None:
        got += ids_of(batch)
        journal.forget(own.commit(batch.end))
    return got


async def append_all(journal: Journal, n: int, start: int = 0, *, per_tick: int | None = None) -> None:
    """Append rows `start`..`start + n`, `per_tick` of them in each event-loop tick (all in one
    by default: one frame per tick)."""
    per_tick = per_tick or n
    for first in range(start, start + n, per_tick):
        futures = [journal.append(make_row(i), _T0_US + i) for i in range(first, min(start + n, first + per_tick))]
        assert all(f is not None for f in futures)
        assert all(await asyncio.gather(*futures))  # type: ignore[arg-type]


async def test_one_write_per_tick_and_reading_back(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    await append_all(journal, 500)
    assert journal.appended == 500
    assert journal.write_position.segment > 1  # 4 KiB segments rotated
    assert drain(journal, batch_rows=64) == list(range(500))
    own = journal.own
    assert own is not None and own.damage.corrupt_records == 0
    # Fully committed segments are deleted, and the cap counts only what is left.
    assert len(list(own.path.glob("*.seg"))) == 1
    assert journal.own_bytes < 4096
    await journal.close()
    assert not own.path.exists()  # everything committed: nothing left behind


async def test_uncommitted_journal_is_left_and_adopted(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    await append_all(journal, 50)
    own_path = journal.own.path  # type: ignore[union-attr]
    await journal.close()
    assert own_path.exists()
    adopted = list(orphans(tmp_path, None))
    assert [o.path for o in adopted] == [own_path]
    batch = adopted[0].read(1000)
    assert batch is not None and ids_of(batch) == list(range(50))
    adopted[0].commit(batch.end)
    assert adopted[0].read(1000) is None and adopted[0].exhausted()
    adopted[0].remove()
    assert not own_path.exists()


def test_a_live_process_keeps_its_journal(tmp_path: Path) -> None:
    held = tmp_path / "someone-elses"
    held.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,os,time;fd=os.open({str(held / 'lock')!r},os.O_RDWR|os.O_CREAT);"
         "fcntl.flock(fd,fcntl.LOCK_EX);print('locked',flush=True);time.sleep(30)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        assert list(orphans(tmp_path, None)) == []
        assert try_lock(held / "lock") is None
    finally:
        holder.kill()
        holder.wait()
    assert [o.path for o in orphans(tmp_path, None)] == [held]  # its process is gone: adopt


async def _orphan_with(tmp_path: Path, n: int) -> tuple[Path, Path]:
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    await append_all(journal, n, per_tick=1)  # a frame each
    path = journal.own.path  # type: ignore[union-attr]
    await journal.close()
    return path, path / "00000001.seg"


async def test_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    _, segment = await _orphan_with(tmp_path, 20)
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a crash in the middle of the last record
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(1000)
    assert batch is not None and ids_of(batch) == list(range(19))
    assert reader.damage.torn_tails == 1
    reader.commit(batch.end)
    assert reader.exhausted()


async def test_flipped_byte_loses_only_its_record(tmp_path: Path) -> None:
    _, segment = await _orphan_with(tmp_path, 20)
    data = bytearray(segment.read_bytes())
    record = len(data) // 20
    data[record * 7 + 20] ^= 0x40  # inside the body of record 7
    data[record * 12 + 3] ^= 0x01  # inside the length field of record 12
    segment.write_bytes(bytes(data))
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(1000)
    assert batch is not None
    assert ids_of(batch) == [i for i in range(20) if i not in (7, 12)]
    assert reader.damage.corrupt_records == 2


async def test_cap_refuses_appends_when_full(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, max_bytes=8192, segment_bytes=4096)
    accepted = refused = 0
    for i in range(400):
        future = journal.append(make_row(i), _T0_US + i)
        if future is None:
            refused += 1
        else:
            accepted += 1
            assert await future
    assert refused > 0 and journal.full
    assert journal.own_bytes < 8192 + 4096
    assert len(drain(journal)) == accepted
    journal.rotate_if_drained()
    assert not journal.full  # committed segments deleted: room again
    assert journal.append(make_row(10_000), _T0_US) is not None
    await journal.close()


async def test_fsync_always_and_interval_work(tmp_path: Path) -> None:
    for policy in (FsyncPolicy.always, FsyncPolicy.interval):
        journal = open_journal(tmp_path / policy.value, fsync=policy, fsync_interval_s=0.01)
        await append_all(journal, 10)
        await asyncio.sleep(0.05)
        await journal.close()


def test_checkpoint_survives_reopen(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    fd = try_lock(tmp_path / "j" / "lock")
    assert fd is not None
    reader = JournalDir(tmp_path / "j", fd, live=False)
    assert reader.read(10) is None
    reader.commit(Position(3, 120))
    reader.release()
    fd = try_lock(tmp_path / "j" / "lock")
    assert JournalDir(tmp_path / "j", fd, live=False).committed == Position(3, 120)  # type: ignore[arg-type]


async def test_a_segment_that_cannot_be_opened_does_not_lose_appends(tmp_path: Path, monkeypatch) -> None:
    """Rotation opens the new file before closing the old one: with the disk full at that
    moment, appends carry on in the current segment (not into a stale descriptor number)."""
    journal = open_journal(tmp_path, segment_bytes=4096)
    real_open = os.open
    refused: list[str] = []

    def refuse_new_segments(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith("00000002.seg") and not refused:
            refused.append(str(path))
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse_new_segments)
    await append_all(journal, 100)  # one tick: its write fills segment 1; rotating is refused
    await append_all(journal, 100, start=100)  # the next tick still lands, and rotates
    assert refused and journal.write_position.segment >= 2  # it moved on once a new file could be made
    assert drain(journal) == list(range(200))
    await journal.close()


def test_segments_are_deleted_even_when_the_checkpoint_cannot_be_saved(tmp_path: Path, monkeypatch) -> None:
    directory = tmp_path / "full"
    directory.mkdir()
    for number in (1, 2, 3):
        (directory / f"{number:08d}.seg").write_bytes(b"x" * 100)
    fd = try_lock(directory / "lock")
    assert fd is not None
    reader = JournalDir(directory, fd, live=False)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert reader.commit(Position(3, 0)) == [1, 2]  # the space is freed all the same
    assert sorted(p.name for p in directory.glob("*.seg")) == ["00000003.seg"]


async def test_a_journal_being_created_is_never_adopted(tmp_path: Path) -> None:
    (tmp_path / ".20261128T000000-1-abcdef12").mkdir()  # another process, between mkdir and lock
    assert list(orphans(tmp_path, None)) == []
    journal = open_journal(tmp_path)
    assert journal.own is not None and not journal.own.path.name.startswith(".")
    hidden = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}  # noqa: ASYNC240
    assert hidden == {".20261128T000000-1-abcdef12"}  # ours was renamed into view
    await journal.close()


def test_a_tick_is_one_frame_of_rows_with_its_time_range() -> None:
    rows = [make_row(i) for i in range(3)]
    data = frame_rows(rows, _T0_US + 5, _T0_US + 9)
    chunk = decode_chunk(data[10:])
    assert (chunk.event_count, chunk.first_us, chunk.last_us) == (3, _T0_US + 5, _T0_US + 9)
    assert split_rows(chunk.rows) == rows


def test_a_large_tick_is_cut_into_frames(tmp_path: Path) -> None:
    n = MAX_FRAME_ROWS * 2 + 3
    data = frame_rows([make_row(i) for i in range(n)], _T0_US, _T0_US + 1)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "00000001.seg").write_bytes(data)
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(10 * n)
    assert batch is not None
    assert [c.event_count for c in batch.chunks] == [MAX_FRAME_ROWS, MAX_FRAME_ROWS, 3]
    assert ids_of(batch) == list(range(n))


async def test_the_time_range_covers_a_clock_that_steps_back(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    futures = [journal.append(make_row(i), _T0_US + t) for i, t in enumerate((50, 40, 70, 60))]
    assert all(await asyncio.gather(*futures))  # type: ignore[arg-type]
    batch = journal.own.read(100, journal.write_position)  # type: ignore[union-attr]
    assert batch is not None and [(c.first_us, c.last_us) for c in batch.chunks] == [(_T0_US + 40, _T0_US + 70)]
    await journal.close()


async def test_format_1_records_of_an_earlier_version_are_still_read(tmp_path: Path) -> None:
    """An upgrade must not strand a journal: frames of both formats in one segment are read."""
    directory = tmp_path / "old"
    directory.mkdir()
    legacy = b"".join(encode(make_event(i)) for i in range(3))
    (directory / "00000001.seg").write_bytes(legacy + frame_rows([make_row(3), make_row(4)], _T0_US, _T0_US))
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(1000)
    assert batch is not None and sorted(ids_of(batch)) == [0, 1, 2, 3, 4]
    assert [e.id for e in batch.legacy] == [0, 1, 2] and batch.count == 5
    assert reader.damage.corrupt_records == 0


def _as_format_3(frame: bytes) -> bytes:
    """A format 4 frame of rows made the way format 3 wrote them: the rows of COLUMNS_V2 (no
    evidence, no address tag), under format 3's magic and checksum."""
    head_size = 10  # magic, length, crc
    chunk = decode_chunk(frame[head_size:])
    rows = []
    for row in split_rows(chunk.rows):
        fields = decode_row(row)
        assert fields["evidence"] is not None
        # Drop the last two fields (evidence: 4 + 2 bytes; addr_tag: 4 + 2 bytes, or 4 for NULL).
        tail = 6 + (4 if fields["addr_tag"] is None else 6)
        rows.append(struct.pack(">h", len(COLUMNS_V2)) + row[2:-tail])
    body = frame[head_size : head_size + 20] + b"".join(rows)
    crc = zlib.crc32(body, zlib.crc32(MAGIC_ROWS_V2, len(body)))
    return MAGIC_ROWS_V2 + struct.pack("<II", len(body), crc) + body


def test_format_3_frames_written_before_evidence_was_kept_are_read_with_it_null(tmp_path: Path) -> None:
    """An upgrade past migration 010 strands nothing: format 3 frames (rows of 15 columns) come
    back as rows of every column, evidence and address tag NULL, next to today's frames."""
    directory = tmp_path / "v3"
    directory.mkdir()
    old = _as_format_3(frame_rows([make_row(1), make_row(2)], _T0_US, _T0_US))
    (directory / "00000001.seg").write_bytes(old + frame_rows([make_row(3)], _T0_US, _T0_US))
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(1000)
    assert batch is not None and sorted(ids_of(batch)) == [1, 2, 3]
    rows = [decode_row(r) for c in batch.chunks for r in split_rows(c.rows)]
    assert [(r["evidence"], r["addr_tag"]) for r in rows[:2]] == [(None, None), (None, None)]
    assert rows[2]["evidence"] == 0 and rows[2]["addr_tag"] is not None
    assert {k: v for k, v in rows[0].items() if k not in ("id", "occurred_at", "evidence", "addr_tag")} == {
        k: v for k, v in decode_row(make_row(1)).items() if k not in ("id", "occurred_at", "evidence", "addr_tag")
    }
    assert reader.damage.corrupt_records == 0


def test_a_flipped_magic_bit_is_damage_not_a_frame_of_the_other_format(tmp_path: Path) -> None:
    """The two magics differ by one bit; format 2 checks its magic in its checksum, so a flip in
    either direction is a damaged frame (counted, skipped), never a frame that verifies."""
    directory = tmp_path / "flip"
    directory.mkdir()
    legacy = encode(make_event(0))
    frame = frame_rows([make_row(1)], _T0_US, _T0_US)
    tail = frame_rows([make_row(2)], _T0_US, _T0_US)
    flipped = bytes([legacy[0], legacy[1] ^ 0x01]) + legacy[2:] + bytes([frame[0], frame[1] ^ 0x01]) + frame[2:]
    (directory / "00000001.seg").write_bytes(flipped + tail)
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(1000)
    assert batch is not None and ids_of(batch) == [2]
    assert reader.damage.corrupt_records == 1  # one damaged stretch, resynchronised at the tail


def test_many_one_event_frames_make_one_batch(tmp_path: Path) -> None:
    """A quiet service writes a frame per event: a batch of thousands must not re-count itself."""
    directory = tmp_path / "many"
    directory.mkdir()
    row = make_row(1)
    one = frame_rows([row], _T0_US, _T0_US)
    (directory / "00000001.seg").write_bytes(one * 20_000)
    (reader,) = orphans(tmp_path, None)
    batch = reader.read(20_000)  # the count is kept as frames are added (it was re-summed: ~5 s)
    assert batch is not None and batch.count == 20_000 and len(batch.chunks) == 20_000


# -- the live journal's frames handed to the writer from memory ---------------------------------


def _count_file_reads(monkeypatch) -> list[int]:
    reads: list[int] = []
    real = JournalDir._parse

    def counting(self: JournalDir, data: bytes, *args: object) -> int:
        reads.append(len(data))
        return real(self, data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(JournalDir, "_parse", counting)
    return reads


async def test_live_frames_are_handed_over_from_memory(tmp_path: Path, monkeypatch) -> None:
    reads = _count_file_reads(monkeypatch)
    journal = open_journal(tmp_path, segment_bytes=4096)
    await append_all(journal, 300, per_tick=7)  # 43 frames over several segments
    assert drain(journal, batch_rows=50) == list(range(300))
    assert reads == []  # nothing read back from disk
    await journal.close()


async def test_past_the_memory_bound_the_file_is_read(tmp_path: Path, monkeypatch) -> None:
    """Frames that did not fit in memory are read from the file, each exactly once, in order,
    and frames kept in memory after such a gap are not handed over twice."""
    reads = _count_file_reads(monkeypatch)
    journal = open_journal(tmp_path, segment_bytes=4096)
    frame = len(frame_rows([make_row(i) for i in range(5)], _T0_US, _T0_US))
    journal._recent.max_bytes = 3 * frame  # room for three ticks of five rows
    got: list[int] = []
    own = journal.own
    assert own is not None
    for start in range(0, 400, 40):
        await append_all(journal, 40, start, per_tick=5)  # eight frames: five do not fit
        while (batch := own.read(12, journal.write_position)) is not None:
            got += ids_of(batch)
            journal.forget(own.commit(batch.end))
    assert got == list(range(400))
    assert reads  # the gaps were read from the file
    assert len(journal._recent) == 0  # and what memory held was used or dropped, not kept
    await journal.close()


# No deadline: each example writes and reads segment files, and on a shared 2-core machine an
# example took 250 ms against hypothesis's 200 ms default (a flaky failure, not a slow journal).
@settings(deadline=None)
@given(
    ticks=st.lists(st.integers(1, 40), min_size=1, max_size=30),
    bound_frames=st.integers(0, 6),
    batch_rows=st.integers(1, 120),
    read_every=st.integers(1, 5),
)
def test_every_event_is_read_once_in_order_whatever_memory_holds(
    ticks: list[int], bound_frames: int, batch_rows: int, read_every: int
) -> None:
    async def scenario(root: Path) -> None:
        journal = open_journal(root, segment_bytes=2048)
        journal._recent.max_bytes = bound_frames * 2000
        own = journal.own
        assert own is not None
        got: list[int] = []
        n = 0
        for number, size in enumerate(ticks):
            await append_all(journal, size, n)
            n += size
            if number % read_every == 0:
                if (batch := own.read(batch_rows, journal.write_position)) is not None:
                    got += ids_of(batch)
                    journal.forget(own.commit(batch.end))
                journal.rotate_if_drained()
        got += drain(journal, batch_rows)
        assert got == list(range(n))
        await journal.close()

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(scenario(Path(root)))


async def test_a_write_the_disk_refused_is_not_handed_over(tmp_path: Path, monkeypatch) -> None:
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    await append_all(journal, 10)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    refused = journal.append(make_row(10), _T0_US + 10)
    assert refused is not None and await refused is False  # the client hears it was not recorded
    monkeypatch.setattr(os, "write", real_write)
    await append_all(journal, 10, 11)
    assert drain(journal) == [*range(10), *range(11, 21)]
    await journal.close()


async def test_frames_the_file_reader_passed_are_let_go(tmp_path: Path, monkeypatch) -> None:
    """If the writer reads past frames memory still holds (after a gap), memory drops them, and
    the frames written after that come from memory again."""
    reads = _count_file_reads(monkeypatch)
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    frame = len(frame_rows([make_row(i) for i in range(5)], _T0_US, _T0_US))
    journal._recent.max_bytes = 2 * frame
    own = journal.own
    assert own is not None
    await append_all(journal, 5, 0)
    journal._recent.max_bytes = 0  # a gap: the next tick is not kept
    await append_all(journal, 5, 5)
    journal._recent.max_bytes = 2 * frame
    await append_all(journal, 5, 10)  # kept again, after the gap
    first = own.read(7, journal.write_position)  # ticks 1 and 2: memory, then the gap
    assert first is not None and ids_of(first) == list(range(5))
    second = own.read(7, journal.write_position)  # the file, from the gap on: through tick 3
    assert second is not None and ids_of(second) == list(range(5, 15)) and len(reads) == 1
    assert own.read(7, journal.write_position) is None
    assert len(journal._recent) == 0  # tick 3's copy in memory was let go, not handed over again
    await append_all(journal, 5, 15)
    third = own.read(7, journal.write_position)
    assert third is not None and ids_of(third) == list(range(15, 20)) and len(reads) == 1  # memory again
    await journal.close()


async def test_a_big_tick_is_handed_over_in_the_same_batches_as_from_the_file(tmp_path: Path) -> None:
    async def batches(root: Path, keep: bool) -> list[list[int]]:
        journal = open_journal(root, segment_bytes=1 << 22, max_bytes=1 << 24)
        if not keep:
            journal._recent.max_bytes = 0
        await append_all(journal, 1200)  # one tick: frames of 512, 512 and 176 rows
        own = journal.own
        assert own is not None
        out = []
        while (batch := own.read(100, journal.write_position)) is not None:
            out.append(ids_of(batch))
            own.commit(batch.end)
        await journal.close()
        return out

    from_memory = await batches(tmp_path / "memory", True)
    assert from_memory == await batches(tmp_path / "file", False)
    assert [len(b) for b in from_memory] == [MAX_FRAME_ROWS, MAX_FRAME_ROWS, 1200 - 2 * MAX_FRAME_ROWS]


async def test_a_frame_with_an_insane_time_is_read_as_the_file_reader_reads_it(tmp_path: Path) -> None:
    """A wall clock at 1970 makes frames the file reader counts as damage; memory must not
    hand them over instead (the two ways of reading agree)."""
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    future = journal.append(make_row(1), 1_000_000)  # 1970-01-01T00:00:01Z
    assert future is not None and await future
    assert len(journal._recent) == 0
    own = journal.own
    assert own is not None
    assert own.read(100, journal.write_position) is None or own.damage.corrupt_records == 1
    await journal.close()


async def test_a_refused_rotation_of_a_drained_journal_keeps_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    journal = open_journal(tmp_path, segment_bytes=4096)
    await append_all(journal, 20)  # a quarter of the segment or more, but not all of it
    own = journal.own
    assert own is not None
    drain(journal)
    committed = own.committed
    assert committed == journal.write_position and committed.offset >= 4096 // 4

    def no_space(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "open", no_space)
    journal.rotate_if_drained()  # cannot make the new segment
    assert own.committed == committed  # not moved back to the start of the current one
    monkeypatch.undo()
    await journal.close()
    assert not own.path.exists()  # all committed: removed, not left for a replay


async def test_a_tick_flushed_by_close_is_not_written_again(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=1 << 20)
    future = journal.append(make_row(1), _T0_US)  # its flush is scheduled for the next tick
    assert future is not None
    path = journal.own.path  # type: ignore[union-attr]
    await journal.close()  # flushes it now
    assert future.done() and future.result()
    await asyncio.sleep(0)  # the scheduled flush runs: nothing left to write
    assert journal.appended == 1
    assert [p.name for p in path.glob("*.seg")] == ["00000001.seg"]
