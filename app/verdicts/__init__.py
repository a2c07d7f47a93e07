"""Verdicts: whether an open or click was a person's or a machine's, and why."""
