"""The PyFlink job (see :mod:`streaming.flink.job`); it runs in its own virtualenv."""
