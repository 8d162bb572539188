"""The lake of market history: the Iceberg ``market.ohlc`` table and how to read it.

:mod:`dexorder.lake.table` holds the table's contract (schema, partitioning,
sort order) and opens the catalog; :mod:`dexorder.lake.query` reads candles
and finds what a range is missing.
"""
