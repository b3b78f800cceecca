"""Benchmarks for the receiver (`make bench`): every figure is a ratio or a bound measured in one run."""
