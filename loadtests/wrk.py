"""Run wrk with loadtests/tokens.lua and read the JSON line its done() prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("tokens.lua")
_MARK = "WRK_JSON "


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int  # responses wrk read completely
    seconds: float
    status_errors: int  # responses with a status above 399
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        """Responses that were 2xx/3xx: the tracked responses served."""
        return self.requests - self.status_errors


def parse(output: str) -> WrkResult:
    """The WrkResult in wrk's stdout; raises ValueError if done() printed no summary."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            e, lat = data["errors"], data["latency_us"]
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                status_errors=int(e["status"]),
                socket_errors=int(e["connect"] + e["read"] + e["write"] + e["timeout"]),
                p50_ms=lat["p50"] / 1000,
                p99_ms=lat["p99"] / 1000,
                p999_ms=lat["p999"] / 1000,
                max_ms=lat["max"] / 1000,
            )
    raise ValueError(f"no {_MARK.strip()} line in wrk output:\n{output[-2000:]}")


def run(base_url: str, paths: list[str], *, seconds: float, connections: int, threads: int,
        user_agent: str) -> WrkResult:  # fmt: skip
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkMissing("wrk is not installed: install the Debian package 'wrk' (make bench does, as root)")
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=True) as f:
        f.write("\n".join(paths) + "\n")
        f.flush()
        argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                "-s", str(LUA), base_url, "--", f.name, user_agent]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
