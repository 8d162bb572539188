"""Typed contracts of the boundaries messages cross outside Kafka and ZeroMQ (those are in
:mod:`dexorder.schemas`): both sides import them, neither imports the other's internals."""
