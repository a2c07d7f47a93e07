"""Where a server process spends its time: py-spy samples it, this turns the collapsed stacks
into a table of the top functions (self and inclusive share of the samples)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def py_spy() -> str:
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed (PyPI package py-spy; make installs it into .venv)")
    return found


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` for `seconds` into a collapsed-stack file; returns the running py-spy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
            "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _name(frame: str) -> str:
    """'handle (site-packages/uvicorn/protocols/http/httptools_impl.py:123)' -> 'handle (httptools_impl.py)'."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m.group(1)} ({m.group(2).rsplit('/', 1)[-1]})"


def top_functions(collapsed: str, limit: int = 15) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, self %, inclusive %)]) ordered by self time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        count = int(m.group(2))
        # The first frame of a py-spy raw stack is the thread ("process 12:"...); skip non-frames.
        frames = [_name(f) for f in m.group(1).split(";") if "(" in f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    rows = [(name, 100 * n / total, 100 * inclusive[name] / total) for name, n in own.most_common(limit)]
    return total, rows


def table(collapsed: str, limit: int = 15) -> str:
    total, rows = top_functions(collapsed, limit)
    lines = [f"{total} samples", "| function | self % | inclusive % |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {s:.1f} | {i:.1f} |" for name, s, i in rows]
    return "\n".join(lines)
