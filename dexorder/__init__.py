"""DexOrder core: the shared contracts every part imports.

Message schemas (:mod:`dexorder.schemas`), market identifiers
(:mod:`dexorder.markets`), Kafka topics and relay channels
(:mod:`dexorder.topics`), configuration (:mod:`dexorder.config`), logging and
health/metrics endpoints. Nothing here knows about any one part's internals.
"""

__version__ = "0.1.0"
