"""trackd: signed tracked links, click redirects and open pixels, every interaction in PostgreSQL."""

__version__ = "0.1.0"
