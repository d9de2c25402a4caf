"""Benchmarks: detection quality (`make quality`) and throughput (`make bench`)."""
