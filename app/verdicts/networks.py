"""Networks that carry machines, not readers: address lists as data.

The bundled list is ``networks.csv`` beside this module; an operator adds ranges of their own with
``TRACKD_NETWORKS_FILE`` (same format, docs/networks-file.md). Each range says what it is evidence
about (``scope``: opens, clicks or both), how strong (``certainty``: certain or probable), why
(``label``) and where it came from (``source``, ``date``).

``Networks.load`` is pure: it reads both files and returns a new object, or raises
``NetworksError`` naming the file, the line and what is wrong. Reloading on SIGHUP is the caller's
swap of one object for another.

Lookups use the standard library, not a radix-tree package. The question asked is not "longest
matching prefix" but "is the address inside any range in scope, certain or probable", so the
ranges are folded at load time, per kind (open, click) and per family, into sorted disjoint
integer intervals each carrying the OR of the flags of the ranges covering it; a lookup is one
``bisect`` over a list of ints. For a few thousand ranges that is what a library would do, with
no C extension, no wheel to track for each new CPython, and no untyped import under mypy strict.
(py-radix 1.1.0 has cp311-cp313 manylinux wheels, but ships no type information and silently
falls back to a pure-Python tree when its extension fails to import; pytricia offers no wheels.)

Measured with timeit (x86_64; the bundled list plus 5,000 random IPv4 and 2,000 random IPv6
operator ranges, 1,000 random probe addresses, best of 7 runs): about 1.0 us
per ``match`` for IPv4, 0.7-1.2 us for IPv6 and IPv4-mapped IPv6, 0.5 us for repeated hits in one
region, on CPython 3.11.7, 3.12.1 and 3.13.0 alike. Budget: 2 us (the caller caches per client
address). tests/test_verdict_networks.py::test_match_is_fast asserts it with room for a busy CI
machine. Loading that file takes about 0.3 s.
"""

from __future__ import annotations

import csv
import datetime
import ipaddress
import pathlib
import re
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["BUNDLED", "SETTING", "Entry", "Match", "Networks", "NetworksError"]

BUNDLED = pathlib.Path(__file__).with_name("networks.csv")
SETTING = "TRACKD_NETWORKS_FILE"

COLUMNS = ("network", "scope", "certainty", "label", "source", "date")
SCOPES = ("opens", "clicks", "both")
CERTAINTIES = ("certain", "probable")
KINDS = ("open", "click")
_KIND_SCOPES = {"open": ("opens", "both"), "click": ("clicks", "both")}
_LABEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_CERTAIN = 1
_PROBABLE = 2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Entry(NamedTuple):
    network: Network
    scope: str
    certainty: str
    label: str
    source: str
    date: str
    origin: str  # "bundled", or the operator file's path


class Match(NamedTuple):
    """Whether the address is inside a certain / a probable range in scope for the kind asked."""

    certain: bool
    probable: bool


# One shared instance per flag combination: `match` allocates nothing.
_MATCHES = (Match(False, False), Match(True, False), Match(False, True), Match(True, True))
NO_MATCH = _MATCHES[0]


class NetworksError(ValueError):
    """A networks file cannot be used; the message is one line naming the file and the line."""


class _Table(NamedTuple):
    starts: list[int]
    ends: list[int]  # inclusive
    flags: list[int]


def _fold(intervals: list[tuple[int, int, int]]) -> _Table:
    """Sorted disjoint intervals, each with the OR of the flags of every interval covering it."""
    # Sweep over boundaries: +flag at start, -flag after end, one counter per flag.
    events: dict[int, list[int]] = {}
    for start, end, flag in intervals:
        events.setdefault(start, [0, 0])[flag - 1] += 1
        events.setdefault(end + 1, [0, 0])[flag - 1] -= 1
    starts: list[int] = []
    ends: list[int] = []
    flags: list[int] = []
    certain = probable = 0
    points = sorted(events)
    for i, point in enumerate(points):
        d_certain, d_probable = events[point]
        certain += d_certain
        probable += d_probable
        current = (_CERTAIN if certain else 0) | (_PROBABLE if probable else 0)
        if not current or i + 1 == len(points):
            continue
        end = points[i + 1] - 1
        if flags and flags[-1] == current and ends[-1] + 1 == point:
            ends[-1] = end  # adjacent, same flags: merge
        else:
            starts.append(point)
            ends.append(end)
            flags.append(current)
    return _Table(starts, ends, flags)


def _normalise(network: Network) -> Network:
    """An IPv4-mapped IPv6 range (::ffff:a.b.c.d/n) is the IPv4 range it maps."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class Networks:
    """An immutable set of entries with a fast per-kind lookup."""

    __slots__ = ("_entries", "_v4", "_v6")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: tuple[Entry, ...] = tuple(e._replace(network=_normalise(e.network)) for e in entries)
        self._v4: dict[str, _Table] = {}
        self._v6: dict[str, _Table] = {}
        for kind in KINDS:
            scopes = _KIND_SCOPES[kind]
            for version in (4, 6):
                intervals = [
                    (
                        int(e.network.network_address),
                        int(e.network.broadcast_address),
                        _CERTAIN if e.certainty == "certain" else _PROBABLE,
                    )
                    for e in self._entries
                    if e.network.version == version and e.scope in scopes
                ]
                (self._v4 if version == 4 else self._v6)[kind] = _fold(intervals)

    @classmethod
    def load(cls, extra: pathlib.Path | None = None) -> Networks:
        """The bundled list plus the operator's file (TRACKD_NETWORKS_FILE), if one is given."""
        entries = parse(BUNDLED, "bundled")
        if extra is not None:
            entries += parse(extra, str(extra))
        return cls(entries)

    def match(self, address: Address, kind: str) -> Match:
        """Whether ``address`` is in a certain / probable range whose scope covers ``kind``."""
        n = int(address)
        if isinstance(address, ipaddress.IPv4Address):
            tables = self._v4
        elif n >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, IPv4-mapped: look it up as a.b.c.d
            n &= 0xFFFFFFFF
            tables = self._v4
        else:
            tables = self._v6
        table = tables.get(kind)
        if table is None:
            raise ValueError(f"kind must be 'open' or 'click', not {kind!r}")
        starts, ends, flags = table
        i = bisect_right(starts, n) - 1
        if i >= 0 and n <= ends[i]:
            return _MATCHES[flags[i]]
        return NO_MATCH

    def entries_for(self, address: Address, kind: str | None = None) -> list[Entry]:
        """Every entry containing ``address`` (in scope for ``kind`` when given): for explaining."""
        if kind is not None and kind not in _KIND_SCOPES:
            raise ValueError(f"kind must be 'open', 'click' or None, not {kind!r}")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        scopes = _KIND_SCOPES[kind] if kind is not None else SCOPES
        return [
            e
            for e in self._entries
            if e.network.version == address.version and address in e.network and e.scope in scopes
        ]

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Networks {len(self._entries)} entries>"


def parse(path: pathlib.Path, origin: str) -> list[Entry]:
    """Entries of one networks file; ``origin`` is "bundled" or the operator file's path."""
    where = f"networks file {path}" if origin == "bundled" else f"{SETTING} file {path}"

    def fail(lineno: int | None, what: str) -> NetworksError:
        at = f" line {lineno}" if lineno is not None else ""
        return NetworksError(f"{where}{at}: {what}")

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(None, f"cannot be read ({exc.__class__.__name__}: {exc})") from None

    header: tuple[str, ...] | None = None
    entries: list[Entry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = [f.strip() for f in next(csv.reader([stripped], strict=True, skipinitialspace=True))]
        except csv.Error as exc:
            raise fail(lineno, f"not CSV ({exc})") from None
        if header is None:
            missing = [c for c in COLUMNS if c not in fields]
            unknown = [f for f in fields if f not in COLUMNS]
            if missing or unknown or len(set(fields)) != len(fields):
                problems = []
                if missing:
                    problems.append("missing column " + ", ".join(missing))
                if unknown:
                    problems.append("unknown column " + ", ".join(repr(u) for u in unknown))
                if not missing and not unknown:
                    problems.append("a column is named twice")
                raise fail(lineno, f"the header must be {','.join(COLUMNS)} ({'; '.join(problems)})")
            header = tuple(fields)
            continue
        if len(fields) != len(header):
            raise fail(lineno, f"{len(fields)} fields where the header has {len(header)} ({','.join(header)})")
        row = dict(zip(header, fields, strict=True))
        problem = _problem(row)
        if problem is not None:
            raise fail(lineno, problem)
        network = ipaddress.ip_network(row["network"], strict=True)
        entries.append(Entry(network, row["scope"], row["certainty"], row["label"], row["source"], row["date"], origin))
    return entries


def _problem(row: dict[str, str]) -> str | None:
    """What is wrong with one row, or None."""
    text = row["network"]
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            return f"network {text!r} has host bits set (the range is {ipaddress.ip_network(text, strict=False)})"
        return f"network {text!r} is not a CIDR or an address"
    if row["scope"] not in SCOPES:
        return f"scope {row['scope']!r} is not one of {', '.join(SCOPES)}"
    if row["certainty"] not in CERTAINTIES:
        return f"certainty {row['certainty']!r} is not one of {', '.join(CERTAINTIES)}"
    if not _LABEL.match(row["label"]):
        return f"label {row['label']!r} is not a short slug (a-z, 0-9, '.', '_', '-'; at most 64)"
    if not row["source"]:
        return "source is empty: say where the range is published"
    date = row["date"]
    try:
        if not _DATE.match(date):
            raise ValueError(date)
        datetime.date.fromisoformat(date)
    except ValueError:
        return f"date {date!r} is not a date written YYYY-MM-DD"
    return None
