"""The local journal: every recorded event is appended here before its response goes out, and the
writer ships it to PostgreSQL from here. It is what makes "no recorded interaction is ever lost"
true across database outages and process crashes.

Layout: one directory per running process under the journal root, holding numbered segment files
(`00000001.seg`, ...), a `checkpoint` (the position up to which everything is committed to
PostgreSQL) and a `lock` file held with flock for the life of the process. A directory whose lock
nobody holds belongs to a process that is gone: a live process adopts it and replays it (that is
how events survive SIGKILL, and how several workers share one data directory without sharing a
file). Replays are harmless because event ids are made at receipt and the table ignores ids it
already has.

Framing: magic (2 bytes) | length u32 | crc32 u32 (of the body, seeded with the length) | body.
A torn tail (a crash mid-write) or a flipped byte fails the check; the reader skips to the next
valid frame, counts the damage and logs it once per segment. Format 2 (magic d7 4b) is one frame
per event-loop tick: a count, the earliest and latest receipt time (unix microseconds), then the
events as `events` rows in PostgreSQL's binary COPY format (app.copyrows), so the writer sends
what it reads without touching each event. Formats 3 (d7 4c) and 4 (d7 4d, written today) are the
same with the columns of links v2 and then of the request's evidence added; older rows get the
new columns as NULL when they are read. Format 1 (magic d7 4a, one raw event per frame) was
written by earlier versions; it is still read, so an upgrade never strands a journal.

Writes: the hot path appends rows to a list and gets a future; one callback per event-loop tick
frames them and makes a single write() (so a burst of requests costs one system call), then
resolves the future. Responses are sent only after that: once a client has its redirect, the
event is in the page cache and survives a crash of the process. How it survives a crash of the
machine is the fsync policy's business (see docs/reliability.md).

Reads: the writer of the process takes its own journal's recent frames from memory
(RecentFrames), not from the file it just wrote; the file is read for what memory does not hold,
for adopted journals, and at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from app.copyrows import upgrade_rows, upgrade_rows_v2
from app.events import RawEvent
from app.settings import FsyncPolicy

log = logging.getLogger("trackd.journal")

MAGIC = b"\xd7\x4a"  # format 1: one raw event (read only)
MAGIC_ROWS = b"\xd7\x4b"  # format 2: a tick's events as COPY rows of COLUMNS_V1 (read only)
MAGIC_ROWS_V2 = b"\xd7\x4c"  # format 3: the same, rows of COLUMNS_V2 (links v2 added columns; read only)
MAGIC_ROWS_V3 = b"\xd7\x4d"  # format 4: the same, rows of COLUMNS (evidence and address tag added)
_MAGICS = (MAGIC, MAGIC_ROWS, MAGIC_ROWS_V2, MAGIC_ROWS_V3)
_HEADER = struct.Struct("<2sII")
# id (two u64), received_at, is_head, then the lengths of peer, forwarded-for, user agent, payload
_BODY = struct.Struct("<QQdBBHHH")
# Format 2: event count, earliest and latest receipt time (unix microseconds), then the rows.
_CHUNK = struct.Struct("<Iqq")
# A tick's rows are cut into frames of at most this many (a row is at most ~20 KB: URL and user
# agent are bounded), so that a frame stays far below _MAX_BODY.
MAX_FRAME_ROWS = 512
_MAX_BODY = 64 << 20
# Receipt times a frame may claim (2000-01-01 .. 2200-01-01, unix microseconds): anything else
# is damage that slipped past the checksum, not a time to make a partition for.
_SANE_US = (946_684_800_000_000, 7_258_118_400_000_000)

_SEGMENT_SUFFIX = ".seg"
# What the appender keeps in memory for its writer (RecentFrames): a few seconds of full load.
_RECENT_MAX_BYTES = 32 << 20
_CHECKPOINT_EVERY_S = 0.5


def _crc(magic: bytes, length: int, body: bytes) -> int:
    """Format 2 checks its magic too: the two magics differ by one bit, and a flipped bit must
    not turn one format into a frame of the other that still verifies."""
    if magic == MAGIC:
        return zlib.crc32(body, length)  # format 1, as earlier versions wrote it
    return zlib.crc32(body, zlib.crc32(magic, length))


class Chunk(NamedTuple):
    """Events of one frame, as COPY rows (format 2)."""

    # Not `count`: that would shadow tuple.count(), which a NamedTuple field must not.
    event_count: int
    first_us: int  # the earliest receipt time among them, unix microseconds
    last_us: int
    rows: bytes


def frame_rows(rows: list[bytes], first_us: int, last_us: int) -> bytes:
    """Frames for `rows` (format 2), at most MAX_FRAME_ROWS to a frame."""
    return _frames(rows, first_us, last_us)[0]


def _frames(rows: list[bytes], first_us: int, last_us: int) -> tuple[bytes, list[tuple[Chunk, int]]]:
    """The frames to write for a tick's rows, and each frame's events as a chunk for the writer,
    with the frame's length on disk."""
    frames = []
    chunks = []
    for start in range(0, len(rows), MAX_FRAME_ROWS):
        part = rows[start : start + MAX_FRAME_ROWS]
        joined = b"".join(part)
        head = _CHUNK.pack(len(part), first_us, last_us)
        length = len(head) + len(joined)
        # _crc(MAGIC_ROWS, length, head + joined), without making that concatenation
        crc = zlib.crc32(joined, zlib.crc32(head, zlib.crc32(MAGIC_ROWS_V3, length)))
        frames.append(b"".join((_HEADER.pack(MAGIC_ROWS_V3, length, crc), head, joined)))
        chunks.append((Chunk(len(part), first_us, last_us, joined), _HEADER.size + length))
    return (frames[0] if len(frames) == 1 else b"".join(frames)), chunks


def decode_chunk(body: bytes) -> Chunk:
    count, first_us, last_us = _CHUNK.unpack_from(body)
    if not (1 <= count <= MAX_FRAME_ROWS and _SANE_US[0] <= first_us <= last_us < _SANE_US[1]):
        raise ValueError("frame header out of range")
    return Chunk(count, first_us, last_us, body[_CHUNK.size :])


def encode(event: RawEvent) -> bytes:
    """A format 1 record (written by earlier versions; kept to test that they are still read)."""
    peer = event.peer.encode("ascii", "replace") if event.peer else b""
    xff = (event.forwarded_for or b"")[:0xFFFF]
    ua = (event.user_agent or b"")[:0xFFFF]
    body = (
        _BODY.pack(event.id >> 64, event.id & 0xFFFF_FFFF_FFFF_FFFF, event.received_at, event.is_head,
                   len(peer), len(xff), len(ua), len(event.payload))
        + peer + xff + ua + event.payload
    )  # fmt: skip
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body, len(body))) + body


def decode_body(body: bytes) -> RawEvent:
    hi, lo, received_at, is_head, n_peer, n_xff, n_ua, n_payload = _BODY.unpack_from(body)
    at = _BODY.size
    peer = body[at : at + n_peer].decode("ascii") or None
    at += n_peer
    xff = body[at : at + n_xff] or None
    at += n_xff
    ua = body[at : at + n_ua] or None
    at += n_ua
    payload = body[at : at + n_payload]
    if at + n_payload != len(body):
        raise ValueError("record body has trailing or missing bytes")
    return RawEvent((hi << 64) | lo, received_at, bool(is_head), payload, peer, xff, ua)


@dataclass
class Damage:
    """What a reader had to skip."""

    corrupt_records: int = 0
    torn_tails: int = 0


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass
class Batch:
    chunks: list[Chunk]
    legacy: list[RawEvent]  # format 1 events, made into rows by the writer
    end: Position
    source: JournalDir
    count: int = 0  # events in chunks and legacy, kept as they are added

    @property
    def first_us(self) -> int | None:
        times = [c.first_us for c in self.chunks] + [round(e.received_at * 1e6) for e in self.legacy]
        return min(times) if times else None


def _segment_name(number: int) -> str:
    return f"{number:08d}{_SEGMENT_SUFFIX}"


def _segments(directory: Path) -> list[int]:
    numbers = []
    for path in directory.iterdir():
        if path.name.endswith(_SEGMENT_SUFFIX) and path.name[:-4].isdigit():
            numbers.append(int(path.name[:-4]))
    return sorted(numbers)


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class _Written(NamedTuple):
    """One frame on disk, as the writer takes it."""

    after: Position  # where the frame before it ended (the same as start, unless a segment began)
    start: Position
    end: Position
    chunk: Chunk


class RecentFrames:
    """What this process wrote to its journal and its writer has not taken yet, kept in memory
    up to `max_bytes`. The writer takes its batches from here rather than reading back, copying
    and checksumming the bytes written a moment ago (0.6 us an event on the serving core,
    measured). The file stays the truth: a frame not here (the bound was reached) is read from
    it, and a frame is only put here once its write succeeded. Batches are cut as the file
    reader cuts them: whole frames, until `max_rows` events or more."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: deque[_Written] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: _Written) -> None:
        size = len(frame.chunk.rows)
        if self._bytes + size > self.max_bytes:
            return  # a gap: the reader meets it and reads from the file instead
        self._frames.append(frame)
        self._bytes += size

    def discard_through(self, position: Position) -> None:
        """Let go of the frames that end at or before `position` (read from the file meanwhile)."""
        frames = self._frames
        while frames and frames[0].end <= position:
            self._bytes -= len(frames.popleft().chunk.rows)

    def take(self, position: Position, max_rows: int) -> tuple[list[Chunk], int, Position] | None:
        """The chunks of the frames from `position` on, until `max_rows` events or more, with the
        position after them; None if the frame at `position` is not here."""
        self.discard_through(position)
        frames = self._frames
        chunks: list[Chunk] = []
        count = 0
        while frames and count < max_rows:
            frame = frames[0]
            if frame.start != position and frame.after != position:
                break  # a gap in what is here
            frames.popleft()
            self._bytes -= len(frame.chunk.rows)
            chunks.append(frame.chunk)
            count += frame.chunk.event_count
            position = frame.end
        return (chunks, count, position) if chunks else None


@dataclass
class JournalDir:
    """Reading side of one journal directory: batches from the checkpoint on, commit, clean up.

    `live` is our own journal, still being appended to; any other is an adopted orphan."""

    path: Path
    lock_fd: int
    live: bool
    damage: Damage = field(default_factory=Damage)
    _read: Position = field(init=False)
    _committed: Position = field(init=False)
    _warned: set[int] = field(default_factory=set)
    _saved_at: float = 0.0
    # Own journal: the frames its appender keeps in memory for us (see RecentFrames).
    recent: RecentFrames | None = None

    def __post_init__(self) -> None:
        self._committed = self._load_checkpoint()
        self._read = self._committed

    def _load_checkpoint(self) -> Position:
        try:
            segment, offset = (self.path / "checkpoint").read_text().split()
            return Position(int(segment), int(offset))
        except (OSError, ValueError):
            segments = _segments(self.path)
            return Position(segments[0] if segments else 1, 0)

    def _save_checkpoint(self, *, now: bool = False) -> None:
        # Written at most twice a second (and whenever segments go, or the directory is let go):
        # a checkpoint a little behind only means a replay after a crash, and replays add nothing.
        # No fsync, for the same reason.
        clock = time.monotonic()
        if not now and clock - self._saved_at < _CHECKPOINT_EVERY_S:
            return
        self._saved_at = clock
        tmp = self.path / "checkpoint.tmp"
        tmp.write_text(f"{self._committed.segment} {self._committed.offset}\n")
        tmp.replace(self.path / "checkpoint")

    def take_damage(self) -> Damage:
        """The damage found since the last call (for the metrics)."""
        damage, self.damage = self.damage, Damage()
        return damage

    def read(self, max_rows: int, write_position: Position | None = None) -> Batch | None:
        """Frames after the last read position, until they hold `max_rows` events or more (a
        frame is never split). `write_position` (own journal) is where the appender is: never
        read past it."""
        if self.recent is not None:
            taken = self.recent.take(self._read, max_rows)
            if taken is not None:
                chunks, count, end = taken
                self._read = end
                return Batch(chunks, [], end, self, count)
        if write_position is not None and self._read >= write_position:
            return None  # caught up with the appender (the writer asks this every flush interval)
        batch = Batch([], [], self._read, self)
        position = self._read
        while batch.count < max_rows:
            path = self.path / _segment_name(position.segment)
            limit = -1
            if write_position is not None and write_position.segment == position.segment:
                limit = write_position.offset - position.offset
            try:
                with path.open("rb") as f:
                    f.seek(position.offset)
                    data = f.read(limit)
            except FileNotFoundError:
                data = b""
            offset = self._parse(data, position, batch, max_rows)
            leftover = position.offset + len(data) - offset
            position = Position(position.segment, offset)
            if batch.count >= max_rows:
                break
            later = [n for n in _segments(self.path) if n > position.segment]
            if leftover and (later or not self.live):
                # Bytes that are no whole record at the end of a finished segment: a torn tail.
                self.damage.torn_tails += 1
                log.warning("journal %s segment %d: torn tail of %d bytes skipped",
                            self.path, position.segment, leftover)  # fmt: skip
                position = Position(position.segment, offset + leftover)
            if not later:
                break
            position = Position(later[0], 0)
        if position == self._read:
            return None
        self._read = batch.end = position
        return batch

    @staticmethod
    def _valid_at(data: bytes, at: int) -> int | None:
        """The end of the record starting at `at` if one whole, valid record starts there."""
        if len(data) - at < _HEADER.size:
            return None
        magic, length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if magic not in _MAGICS or length > _MAX_BODY or end > len(data):
            return None
        return end if _crc(magic, length, data[at + _HEADER.size : end]) == crc else None

    def _next_valid(self, data: bytes, start: int) -> int | None:
        at = data.find(MAGIC[:1], start)  # both magics start with the same byte
        while at != -1:
            if self._valid_at(data, at) is not None:
                return at
            at = data.find(MAGIC[:1], at + 1)
        return None

    def _parse(self, data: bytes, start: Position, out: Batch, max_rows: int) -> int:
        """Decode frames from `data` (which starts at `start`) into `out`; return the offset just
        after the last whole frame consumed. Damaged frames are skipped up to the next valid one;
        an incomplete frame at the end is left unconsumed."""
        at = 0
        size = len(data)
        while at < size and out.count < max_rows:
            end = self._valid_at(data, at)
            if end is not None:
                try:
                    body = data[at + _HEADER.size : end]
                    second = data[at + 1]
                    if second == MAGIC_ROWS_V3[1]:
                        chunk = decode_chunk(body)
                        out.chunks.append(chunk)
                        out.count += chunk.event_count
                    elif second == MAGIC_ROWS_V2[1]:  # written before evidence was kept
                        chunk = decode_chunk(body)
                        out.chunks.append(chunk._replace(rows=upgrade_rows_v2(chunk.rows)))
                        out.count += chunk.event_count
                    elif second == MAGIC_ROWS[1]:  # written before links v2: rows get the new columns
                        chunk = decode_chunk(body)
                        out.chunks.append(chunk._replace(rows=upgrade_rows(chunk.rows)))
                        out.count += chunk.event_count
                    else:
                        out.legacy.append(decode_body(body))
                        out.count += 1
                    at = end
                    continue
                except (ValueError, struct.error, UnicodeDecodeError):
                    resume = self._next_valid(data, at + 1)
            else:
                resume = self._next_valid(data, at + 1)
                if resume is None and self._could_be_partial(data, at):
                    break  # the record is still being written (own journal) or a torn tail
            skipped_to = size if resume is None else resume
            self.damage.corrupt_records += 1
            if start.segment not in self._warned:
                self._warned.add(start.segment)
                log.error("journal %s segment %d: damaged record at offset %d skipped",
                          self.path, start.segment, start.offset + at)  # fmt: skip
            at = skipped_to
        return start.offset + at

    @staticmethod
    def _could_be_partial(data: bytes, at: int) -> bool:
        if len(data) - at < _HEADER.size:
            return any(data[at : at + 2] == m[: len(data) - at] for m in _MAGICS)
        magic, length, _ = _HEADER.unpack_from(data, at)
        return magic in _MAGICS and length <= _MAX_BODY and at + _HEADER.size + length > len(data)

    def commit(self, end: Position) -> list[int]:
        """Everything before `end` is in PostgreSQL: advance the checkpoint and delete the
        segments that are wholly done. Returns the numbers of the deleted segments."""
        self._committed = end
        self._read = max(self._read, end)
        done = [n for n in _segments(self.path) if n < end.segment]
        # Segments go first: on a full disk the checkpoint cannot be written, and deleting is
        # what frees the space. A checkpoint left pointing into a deleted segment is harmless:
        # the reader treats a missing segment as empty and moves on.
        for number in done:
            with contextlib.suppress(FileNotFoundError):
                (self.path / _segment_name(number)).unlink()
        try:
            self._save_checkpoint(now=bool(done))
        except OSError as exc:
            log.warning("journal %s: checkpoint not saved (%s); a restart would replay, harmlessly", self.path, exc)
        return done

    @property
    def committed(self) -> Position:
        return self._committed

    def exhausted(self) -> bool:
        """An orphan whose every record is committed."""
        segments = _segments(self.path)
        if not segments:
            return True
        last = segments[-1]
        if self._committed.segment < last:
            return False
        size = (self.path / _segment_name(last)).stat().st_size
        return self._committed.offset >= size

    def bytes_pending(self) -> int:
        total = 0
        for number in _segments(self.path):
            with contextlib.suppress(FileNotFoundError):
                size = (self.path / _segment_name(number)).stat().st_size
                if number == self._committed.segment:
                    size -= self._committed.offset
                total += max(0, size)
        return total

    def release(self) -> None:
        """Stop holding this directory (it stays on disk for whoever comes next)."""
        with contextlib.suppress(OSError):
            self._save_checkpoint(now=True)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)

    def remove(self) -> None:
        for path in self.path.iterdir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()
        os.close(self.lock_fd)


class Journal:
    """The appending side of this process's journal directory."""

    def __init__(self, root: Path, *, max_bytes: int, segment_bytes: int, fsync: FsyncPolicy,
                 fsync_interval_s: float) -> None:  # fmt: skip
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.appended = 0  # events written to disk by this process
        self._pending: list[bytes] = []
        self._first_us = 0
        self._last_us = 0
        self._flushed: asyncio.Future[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._segment = 0
        self._offset = 0
        self._bytes_since_sync = 0
        self._disk_bytes = 0
        self._sizes: dict[int, int] = {}
        self._sync_task: asyncio.Task[None] | None = None
        self._recent = RecentFrames(min(_RECENT_MAX_BYTES, max_bytes))
        self._last_end = Position(0, 0)
        self.own: JournalDir | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> JournalDir:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Made and locked under a hidden name, then renamed into view: another worker's orphan
        # scan must never see (and adopt) a directory whose owner has not locked it yet.
        hidden = self.root / f".{name}"
        hidden.mkdir()
        lock_fd = try_lock(hidden / "lock")
        assert lock_fd is not None, "nobody else can know of a directory made a moment ago"
        path = self.root / name
        hidden.rename(path)
        self.own = JournalDir(path, lock_fd, live=True, recent=self._recent)
        self._open_segment(1)
        self._last_end = self.write_position
        self._loop = asyncio.get_running_loop()
        if self.fsync is FsyncPolicy.interval:
            self._sync_task = asyncio.create_task(self._sync_periodically(), name="trackd-journal-fsync")
        return self.own

    def _open_segment(self, number: int) -> None:
        """Switch to segment `number`. The new file is opened before the old one is closed: if
        it cannot be (disk full), appends go on into the current segment rather than into a
        closed descriptor number that the process may since have reused for a socket."""
        assert self.own is not None
        try:
            fd = os.open(self.own.path / _segment_name(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            if self._fd < 0:
                raise
            log.error("journal: cannot start segment %d (%s); the current one keeps growing", number, exc)
            return
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                if self.fsync is not FsyncPolicy.never:
                    os.fdatasync(self._fd)
            os.close(self._fd)
        self._fd = fd
        self._segment, self._offset = number, 0
        if self.fsync is not FsyncPolicy.never:
            # The new file's directory entry must be durable too, or a machine crash loses it.
            dir_fd = os.open(self.own.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def close(self) -> None:
        """Write what is pending and stop. The directory stays unless everything is committed."""
        if self._flushed is not None:
            self._flush()
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self._fd >= 0:
            if self.fsync is not FsyncPolicy.never:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1
        own = self.own
        if own is not None:
            if own.committed >= self.write_position:
                own.remove()
            else:
                own.release()  # left for the next start to replay

    # -- appending (the hot path) --------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self._disk_bytes >= self.max_bytes

    @property
    def own_bytes(self) -> int:
        """Bytes of our own segments still on disk: what TRACKD_JOURNAL_MAX_BYTES caps."""
        return self._disk_bytes

    def forget(self, deleted: list[int]) -> None:
        """The writer deleted these (fully committed) segments of our own journal."""
        for number in deleted:
            self._disk_bytes -= self._sizes.pop(number, 0)

    def append(self, row: bytes, received_us: int) -> asyncio.Future[bool] | None:
        """Queue an event's row (app.copyrows) for this tick's write. Returns a future that is
        True once it is written (False if the disk refused it), or None at once if the journal
        is full."""
        if self._fd < 0 or self._disk_bytes >= self.max_bytes:
            return None
        flushed = self._flushed
        if flushed is None:
            assert self._loop is not None
            flushed = self._flushed = self._loop.create_future()
            self._loop.call_soon(self._flush)
            self._first_us = self._last_us = received_us
        elif received_us < self._first_us:
            self._first_us = received_us  # the wall clock stepped back within the tick
        elif received_us > self._last_us:
            self._last_us = received_us
        self._pending.append(row)
        return flushed

    def _flush(self) -> None:
        if not self._pending:
            return  # already flushed by close()
        rows, self._pending = self._pending, []
        flushed, self._flushed = self._flushed, None
        segment, offset = self._segment, self._offset
        data, frames = _frames(rows, self._first_us, self._last_us)
        ok = self._write(data)
        if ok:
            # Times outside the sane range are damage to the reader of the file (decode_chunk);
            # such frames are left to it, so that both ways of reading agree.
            keep = _SANE_US[0] <= self._first_us and self._last_us < _SANE_US[1]
            for chunk, length in frames:
                start = Position(segment, offset)
                offset += length
                end = Position(segment, offset)
                if keep:
                    self._recent.put(_Written(self._last_end, start, end, chunk))
                self._last_end = end
            self.appended += len(rows)
            if self.fsync is FsyncPolicy.always:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:  # written, just not known to be on disk: answer anyway
                    log.error("journal fdatasync failed: %s", exc)
        if flushed is not None and not flushed.done():
            flushed.set_result(ok)
        if ok and self._offset >= self.segment_bytes:
            self._open_segment(self._segment + 1)

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            # Disk full or failing: take back the partial write so no torn record is left.
            log.error("journal write failed: %s", exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
            return False
        self._offset += written
        self._sizes[self._segment] = self._offset
        self._disk_bytes += written
        self._bytes_since_sync += written
        return True

    async def _sync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            if self._bytes_since_sync and self._fd >= 0:
                self._bytes_since_sync = 0
                fd = self._fd
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.fdatasync, fd)

    @property
    def write_position(self) -> Position:
        return Position(self._segment, self._offset)

    def rotate_if_drained(self) -> None:
        """Start a new segment when the current one is fully committed, so it can be deleted:
        without this a quiet service would keep its last segment forever, counted against the cap."""
        assert self.own is not None
        if self._offset >= self.segment_bytes // 4 and self.own.committed >= self.write_position:
            segment = self._segment
            self._open_segment(segment + 1)
            if self._segment != segment:  # not if the new file could not be made (disk full)
                self.forget(self.own.commit(Position(self._segment, 0)))


def orphans(root: Path, own: Path | None) -> Iterator[JournalDir]:
    """Journal directories no live process holds: each is locked for us and returned."""
    if not root.exists():
        return
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if own is not None and path == own:
            continue
        lock_fd = try_lock(path / "lock")
        if lock_fd is not None:
            yield JournalDir(path, lock_fd, live=False)
