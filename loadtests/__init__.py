"""Benchmarks and load tests for trackd: `make bench`, `make bench-soak`, `make bench-growth`,
`make bench-writer`, `make loadtest`. They run only against 127.0.0.1 and stop by themselves."""
