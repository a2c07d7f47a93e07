"""Settings that could send people somewhere unsigned are refused at start-up."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize("fallback", ["javascript:alert(1)", "//evil.example/", "https://user@evil.example/"])
def test_a_fallback_url_that_could_not_be_signed_is_refused(fallback: str) -> None:
    """The fallback redirect is ours too: it meets the same rules as a signed link."""
    with pytest.raises(ValueError, match="TRACKD_FALLBACK_URL"):
        Settings(fallback_url=fallback)


def test_trusted_proxies_must_be_networks() -> None:
    with pytest.raises(ValueError):
        Settings(trusted_proxies="10.0.0.0/8,not-a-network")
    assert Settings(trusted_proxies="10.0.0.0/8, 192.0.2.1").trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
