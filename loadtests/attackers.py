"""The hostile clients of `make bench-hostile`, in a process of their own (so their work is not
done on the benchmark driver's interpreter): clients that pipeline and never read, a slowloris
crowd, and one very large request stream. Loopback only; every loop ends by `--seconds`.

    python -m loadtests.attackers --port P --token-path /c/... --seconds 20

Prints one JSON line with what each attacker managed to do (bytes the server took, connections
it closed), so the report can say the attack really ran.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from dataclasses import dataclass, field, fields

HOST = "127.0.0.1"


@dataclass
class Tally:
    pipelined_bytes: int = 0  # request bytes the non-reading clients got the server to take
    pipeliner_connections: int = 0
    slowloris_opened: int = 0
    slowloris_closed_by_server: int = 0
    stream_bytes: int = 0  # bytes of the large stream the server took before it answered/closed
    stream_answer: str = ""
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


def pipeliner(port: int, path: str, deadline: float, tally: Tally) -> None:
    """Writes pipelined clicks as fast as the server reads them; never reads an answer."""
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: pipeliner\r\n\r\n".encode()
    chunk = request * 256
    while time.monotonic() < deadline:
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((HOST, port))
            tally.add("pipeliner_connections", 1)
            sock.settimeout(0.5)
            while time.monotonic() < deadline:
                try:
                    tally.add("pipelined_bytes", sock.send(chunk))
                except TimeoutError:
                    continue  # the server stopped reading: keep the pressure on
        except OSError:
            time.sleep(0.05)  # closed by the server: come back
        finally:
            sock.close()


def slowloris(port: int, count: int, deadline: float, tally: Tally) -> None:
    """`count` connections, each dripping one header byte every 2 s; reopened when closed."""
    socks: list[socket.socket | None] = [None] * count
    next_drip = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        for i, sock in enumerate(socks):
            if sock is None:
                try:
                    sock = socket.create_connection((HOST, port), timeout=2)
                    sock.setblocking(False)
                    sock.send(b"GET /c/")
                    socks[i] = sock
                    tally.add("slowloris_opened", 1)
                except OSError:
                    continue
            elif now >= next_drip:
                try:
                    sock.send(b"a")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    tally.add("slowloris_closed_by_server", 1)
                    sock.close()
                    socks[i] = None
        if now >= next_drip:
            next_drip = now + 2.0
        time.sleep(0.2)
    for sock in socks:
        if sock is not None:
            sock.close()


def big_stream(port: int, total: int, deadline: float, tally: Tally) -> None:
    """One request whose target is `total` bytes long, sent in 64 KB writes."""
    block = b"a" * 65536
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(b"GET /c/tok?")
            sent = 0
            while sent < total and time.monotonic() < deadline:
                sock.sendall(block)
                sent += len(block)
                tally.add("stream_bytes", len(block))
            sock.settimeout(2)
            tally.stream_answer = sock.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as exc:
        # The server answered and closed mid-stream (what it should do): the write fails.
        tally.stream_answer = tally.stream_answer or f"closed by the server ({type(exc).__name__})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-path", required=True, help="a valid /c/ path the pipeliners replay")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--pipeliners", type=int, default=4)
    p.add_argument("--slowloris", type=int, default=1000)
    p.add_argument("--stream-mb", type=int, default=128)
    a = p.parse_args()
    deadline = time.monotonic() + a.seconds
    tally = Tally()
    threads = [threading.Thread(target=pipeliner, args=(a.port, a.token_path, deadline, tally), daemon=True)
               for _ in range(a.pipeliners)]  # fmt: skip
    threads.append(threading.Thread(target=slowloris, args=(a.port, a.slowloris, deadline, tally), daemon=True))
    threads.append(threading.Thread(target=big_stream, args=(a.port, a.stream_mb << 20, deadline, tally),
                                    daemon=True))  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    out = {f.name: getattr(tally, f.name) for f in fields(tally) if f.name != "lock"}
    print("ATTACK_JSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
