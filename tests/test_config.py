"""Bad configuration: one line naming the variable, no traceback, a non-zero exit."""

from __future__ import annotations

import httpx
import pytest

from app.pgserver import EmbeddedPostgres
from tests.support import SIGNING_KEYS, ServerProcess, free_port, postgres_dir
from tests.test_cli import run_cli

KEYS = "k1:test-secret-number-one-abcdef"


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRACKD_PORT", "abc"),
        ("TRACKD_PORT", "70000"),
        ("TRACKD_SIGNING_KEYS", "no-colon-here"),
        ("TRACKD_PUBLIC_URL", "t.example.com"),
        ("DATABASE_URL", "postgres://x:y@:notaport/db"),
        ("DATABASE_URL", "notaurl"),
        ("TRACKD_BATCH_MAX_ROWS", "0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(command: str, name: str, value: str) -> None:
    result = run_cli(command, env={name: value})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{name}: "), result.stderr


def test_shared_database_without_signing_keys_is_refused() -> None:
    result = run_cli("serve", env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/x", "TRACKD_SIGNING_KEYS": ""})
    assert result.returncode != 0 and result.stderr.startswith("TRACKD_SIGNING_KEYS: "), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_variable_is_warned_about_by_name() -> None:
    result = run_cli(
        "sign", "--campaign", "c", "--recipient", "r", env={"TRACKD_PROT": "1", "TRACKD_SIGNING_KEYS": KEYS}
    )
    assert result.returncode == 0, result.stderr
    assert "TRACKD_PROT is not a trackd setting (did you mean TRACKD_PORT?)" in result.stderr


def test_a_second_server_on_a_data_directory_in_use_refuses_and_leaves_the_first_alone() -> None:
    """Two `trackd serve` on one data directory: the second exits with one line naming
    TRACKD_DATA_DIR, the first keeps answering and its embedded PostgreSQL keeps running; then
    `trackd migrate` on a free directory stops the PostgreSQL it started."""
    with postgres_dir() as data_dir:
        first = ServerProcess(data_dir, database_url="", env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})
        pg = EmbeddedPostgres(data_dir / "pg")
        with first.start(timeout=60):
            second = run_cli("serve", "--port", str(free_port()),
                             env={"TRACKD_DATA_DIR": str(data_dir), "DATABASE_URL": "",
                                  "TRACKD_SIGNING_KEYS": SIGNING_KEYS})  # fmt: skip
            assert second.returncode != 0
            assert second.stderr.strip().splitlines()[-1].startswith("TRACKD_DATA_DIR"), second.stderr
            assert "Traceback" not in second.stderr
            assert pg.is_running()
            assert httpx.get(first.base_url + "/readyz", timeout=5).status_code == 200
        assert not pg.is_running()
        migrated = run_cli("migrate", env={"TRACKD_DATA_DIR": str(data_dir), "DATABASE_URL": ""})
        assert migrated.returncode == 0, migrated.stderr
        assert not pg.is_running(), "trackd migrate must stop the embedded PostgreSQL it started"
