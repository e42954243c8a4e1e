"""Benchmarks (`make bench`): real processes on loopback, JSON figures, no assertions on time."""
