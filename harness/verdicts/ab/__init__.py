"""Interleaved A/B of two revisions (``run_bench.py ab``): sides, rounds, statistics, output."""
