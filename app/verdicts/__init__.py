"""Judging machines from people."""
