"""Benchmarks: ``python -m bench [stream|relay|latency ...]`` (``make bench``)."""
