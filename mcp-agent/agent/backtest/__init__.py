"""Backtests: the engine (:mod:`.engine`, pure numpy), metrics, charts and sweeps."""
