"""The ``market.ohlc`` table: schema, partitioning, sort order, catalog.

Partitioning is ``day(open_time)`` then ``identity(ticker)``: queries ask for
one ticker over a time range, so both prune files. Days (not months) keep the
live writer's appends and the compaction rewrites small and local; a month of
1m candles for one ticker is then 30 files of 1,440 rows, which the scan reads
in tens of milliseconds. ``identity(ticker)`` rather than a bucket because
the tickers are few and a query names exactly one. Rows are sorted by
(ticker, timeframe, open_time) so files read back in order.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DoubleType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from dexorder.config import Settings

TABLE = "ohlc"
#: Snapshot summary key holding the Kafka offsets a commit covers (exactly once).
OFFSETS_PROPERTY = "dexorder.kafka-offsets"

OHLC_SCHEMA = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "ticker", StringType(), required=True),
    NestedField(3, "timeframe", StringType(), required=True),
    NestedField(4, "open_time", TimestamptzType(), required=True),
    NestedField(5, "open", DoubleType(), required=True),
    NestedField(6, "high", DoubleType(), required=True),
    NestedField(7, "low", DoubleType(), required=True),
    NestedField(8, "close", DoubleType(), required=True),
    NestedField(9, "volume", DoubleType(), required=True),
    NestedField(10, "trades", LongType(), required=True),
    NestedField(11, "source", StringType(), required=True),
)

OHLC_SPEC = PartitionSpec(
    PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="open_day"),
    PartitionField(source_id=2, field_id=1001, transform=IdentityTransform(), name="ticker"),
)

OHLC_SORT = SortOrder(
    SortField(source_id=2, transform=IdentityTransform()),
    SortField(source_id=3, transform=IdentityTransform()),
    SortField(source_id=4, transform=IdentityTransform()),
)

#: Table properties the platform relies on: manifests merged on append (the
#: live writer commits every minute, and scan planning reads every manifest),
#: and old metadata files removed as new ones are written.
TABLE_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}

#: The Arrow schema rows are written with.
ARROW_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("open_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


def open_catalog(cfg: Settings) -> Catalog:
    """The configured catalog (SQLite under the home folder by default)."""
    lake_dir = cfg.home / "lake"
    uri = cfg.lake.catalog_uri
    warehouse = cfg.lake.warehouse
    if uri is None or warehouse is None:
        lake_dir.mkdir(parents=True, exist_ok=True)
    uri = uri or f"sqlite:///{lake_dir / 'catalog.db'}"
    warehouse = warehouse or Path(lake_dir / "warehouse").as_uri()
    return SqlCatalog("dexorder", uri=uri, warehouse=warehouse, **cfg.lake.properties)


def ohlc_table(catalog: Catalog, namespace: str = "market") -> Table:
    """The ``market.ohlc`` table, created on first use."""
    try:  # first, as a reader may see the lake read-only (a person's agent does)
        existing = catalog.load_table(f"{namespace}.{TABLE}")
    except (NoSuchTableError, NoSuchNamespaceError):
        pass
    else:
        if all(existing.properties.get(k) == v for k, v in TABLE_PROPERTIES.items()):
            return existing
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    try:
        return catalog.create_table(
            f"{namespace}.{TABLE}",
            schema=OHLC_SCHEMA,
            partition_spec=OHLC_SPEC,
            sort_order=OHLC_SORT,
            properties=TABLE_PROPERTIES,
        )
    except TableAlreadyExistsError:
        table = catalog.load_table(f"{namespace}.{TABLE}")
    if any(table.properties.get(k) != v for k, v in TABLE_PROPERTIES.items()):
        try:
            with table.transaction() as tx:
                tx.set_properties(TABLE_PROPERTIES)
        except CommitFailedException:
            table.refresh()  # another process set them first
    return table
