"""The cluster's stream engine: a PyFlink job (:mod:`streaming.flink.job`) in its own
virtualenv (``make flink-venv``; apache-flink pins pyarrow 16, which clashes with pyiceberg's).

It imports only the project's pure modules (:mod:`streaming.candles`, :mod:`streaming.rules`,
:mod:`dexorder.schemas`, :mod:`dexorder.contracts.rules`, :mod:`dexorder.record_signing`,
...), never the parts that need pyiceberg or aiokafka.

**What is Flink SQL and what is Python, and why.** The issue asks for SQL wherever it says
the logic exactly; the parity test (``tests/flink``) is the judge. SQL is used for the Kafka
I/O (the Kafka SQL connector's tables, raw format, exactly-once sinks); the logic is Python,
the local runner's own ``CandleBook`` and ``TickerRules`` in a keyed process function,
because none of the SQL candidates says it exactly:

* **Dedup by** ``ROW_NUMBER() OVER (PARTITION BY exchange, symbol, trade_id ...) = 1``:
  the ticks are MessagePack (:mod:`dexorder.schemas`) and Flink SQL has no MessagePack
  format, so SQL cannot see a trade id without a Python UDF decoding every record: one more
  Java↔Python round trip per tick, the very cost this job is made of (see the benchmark).
  It would also keep every trade id until a state TTL, where the book keeps a minute's ids
  until the minute closes, and it would count a late copy as a duplicate (the book checks
  lateness first). The book dedups anyway, so a SQL stage would only add cost.
* **Candles with window TVFs** (``TUMBLE``, cascaded for 5m … 1d): a window closes by the
  operator's watermark, one per source split (the minimum over the partitions feeding it),
  not one per ticker. In the fixture ``KRAKEN:XRP/USD``'s trade times run 40 s behind the
  other tickers: under one watermark with 2 s lateness every one of its ticks is late and
  dropped, where the book's per-ticker watermark keeps it whole (the test checks its 150
  minutes). Open and close are by (trade time, trade id) in the book; SQL's
  ``FIRST_VALUE``/``LAST_VALUE`` are by arrival, and there is no arg-min/arg-max by a
  composite key, so the fixture's out-of-order ticks would change opens and closes. A quiet
  ticker's window would close only when the shared watermark moves (or the source idles),
  not by the ticker's own quiet time.
* **Rules with** ``MATCH_RECOGNIZE``: a pattern is fixed in the query text, but rules are
  data: thousands of people's rules, added and deleted while the job runs. One query per
  rule is not a job; ``TickerRules`` indexes them per ticker in keyed state instead.

The state of a ticker (``KeyState``: its ``TickerBook`` and ``TickerRules``) is one
``ValueState`` holding the Python object; PyFlink's state cache keeps it between ticks and
pickles it, as the books' MessagePack snapshot, only when the cache flushes.
"""
