"""Benchmark suite: load generator, bare echo worker, runner and report (issue #7)."""
