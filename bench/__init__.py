"""Benchmarks: detection quality (`make quality`); throughput, latency, memory (`make bench`)."""
