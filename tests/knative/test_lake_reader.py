"""The agents' lake role (knative/lake/reader-role.sql) against a real PostgreSQL: an agent
reads the Iceberg table through the catalog and can change nothing, in the catalog or
anywhere else; and the S3 policy it is given (knative/lake/reader-s3-policy.json) reads
objects and nothing more (as moto's IAM evaluation enforces it).

pg_hba.conf (which databases and addresses the role may log in from) is the operator's
and is not tested: the test server trusts loopback logins."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psycopg
import pyarrow as pa
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.exc import DBAPIError

from dexorder.lake.query import get_candles
from dexorder.lake.table import ARROW_SCHEMA, ohlc_table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAKE = ROOT / "knative/lake"


def _sql(statement: str, dbname: str = "postgres") -> None:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{dbname}", autocommit=True) as c:
        c.execute(statement)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A catalog database with the table and a day of candles, an unrelated database with
    a table, and the reader role made by the shipped SQL file: (catalog db, role, warehouse)."""
    tag = uuid.uuid4().hex[:10]
    db, other, role = f"k12_lake_{tag}", f"k12_accounts_{tag}", f"k12_reader_{tag}"
    _sql(f'CREATE DATABASE "{db}"')
    _sql(f'CREATE DATABASE "{other}"')
    try:
        _sql("CREATE TABLE accounts (id text); INSERT INTO accounts VALUES ('alice')", other)
        warehouse = tmp_path / "warehouse"
        writer = SqlCatalog(
            "dexorder",
            uri=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
            warehouse=warehouse.as_uri(),
        )
        table = ohlc_table(writer)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        rows = [
            {
                "exchange": "BINANCE",
                "ticker": "BINANCE:BTC/USDT",
                "timeframe": "1h",
                "open_time": t0.replace(hour=h),
                "open": 1.0,
                "high": 2.0,
                "low": 0.5,
                "close": 1.5,
                "volume": 10.0,
                "trades": 3,
                "source": "test",
            }
            for h in range(5)
        ]
        table.append(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
        writer.engine.dispose()
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"role={role}",
                "-v",
                "password=not-checked-by-a-trusting-test-server",
                "-f",
                str(LAKE / "reader-role.sql"),
            ],
            check=True,
            capture_output=True,
        )
        yield db, role, warehouse
    finally:
        for name in (db, other):
            _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # its grants went with the catalog database; then the role itself
        _sql(f'DROP ROLE IF EXISTS "{role}"')


def test_an_agent_reads_the_lake_and_changes_nothing(lake: tuple[str, str, Path]) -> None:
    db, role, warehouse = lake
    reader = SqlCatalog(
        "dexorder",
        uri=f"postgresql+psycopg2://{role}@127.0.0.1:5432/{db}",
        warehouse=warehouse.as_uri(),
        init_catalog_tables="false",
    )
    try:
        table = ohlc_table(reader)  # as the agent opens it (dexorder/lake/candles.py)
        start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
        got = get_candles(table, "BINANCE:BTC/USDT", "1h", start, start + 5 * 3_600_000)
        assert got.num_rows == 5
        # the catalog: no new namespace, no table, no commit
        with pytest.raises(DBAPIError, match=r"read-only transaction|permission denied"):
            reader.create_namespace("mine")
        with pytest.raises(DBAPIError, match=r"read-only transaction|permission denied"):
            table.append(got.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA))
        assert ohlc_table(reader).current_snapshot() == table.current_snapshot()
    finally:
        reader.engine.dispose()

    url = f"postgresql://{role}@127.0.0.1:5432/{db}"
    with psycopg.connect(url, autocommit=True) as c:
        # read-only by default; asking for a writable transaction, it lacks the privileges
        read_only, refused = (
            psycopg.errors.ReadOnlySqlTransaction,
            psycopg.errors.InsufficientPrivilege,
        )
        for statement, error in (
            ("DELETE FROM iceberg_tables", read_only),
            ("CREATE TABLE stash (x text)", read_only),
            ("BEGIN READ WRITE; DELETE FROM iceberg_tables", refused),
            ("BEGIN READ WRITE; UPDATE iceberg_tables SET metadata_location = 'x'", refused),
            ("BEGIN READ WRITE; CREATE TABLE stash (x text)", refused),
        ):
            with pytest.raises(error):
                c.execute(statement)
            c.execute("ROLLBACK")
        settings: dict[str, str] = dict(
            c.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('statement_timeout', 'default_transaction_read_only')"
            ).fetchall()
        )
        assert settings == {"statement_timeout": "30000", "default_transaction_read_only": "on"}
        assert c.execute(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (200,)


def test_the_role_reads_nothing_outside_the_catalog(lake: tuple[str, str, Path]) -> None:
    db, role, _ = lake
    other = db.replace("k12_lake_", "k12_accounts_")
    # (PUBLIC may CONNECT to any database unless revoked: pg_hba.conf keeps the role to
    # the catalog's; even connected, it reads nothing there)
    with (
        psycopg.connect(f"postgresql://{role}@127.0.0.1:5432/{other}", autocommit=True) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute("SELECT * FROM accounts")


@set_initial_no_auth_action_count(6)  # the set-up below; then every call is checked
@mock_aws
def test_the_s3_keys_only_read_the_warehouse() -> None:
    """The policy as an S3 store enforces it (moto's IAM evaluation): the reader's keys get
    the lake's files and nothing else; no write, no delete, no listing (pyiceberg reads
    the files its metadata names, it never lists)."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="dexorder-lake")
    s3.put_object(Bucket="dexorder-lake", Key="warehouse/market/ohlc/data/a.parquet", Body=b"x")
    s3.put_object(Bucket="dexorder-lake", Key="backups/accounts.sql", Body=b"y")
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="agents")
    policy = (LAKE / "reader-s3-policy.json").read_text()
    iam.put_user_policy(UserName="agents", PolicyName="lake-read", PolicyDocument=policy)
    key = iam.create_access_key(UserName="agents")["AccessKey"]
    reader = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    got = reader.get_object(Bucket="dexorder-lake", Key="warehouse/market/ohlc/data/a.parquet")
    assert got["Body"].read() == b"x"
    refused: list[Callable[[], object]] = [
        lambda: reader.put_object(Bucket="dexorder-lake", Key="warehouse/new", Body=b"z"),
        lambda: reader.delete_object(
            Bucket="dexorder-lake", Key="warehouse/market/ohlc/data/a.parquet"
        ),
        lambda: reader.get_object(Bucket="dexorder-lake", Key="backups/accounts.sql"),
        lambda: reader.list_objects_v2(Bucket="dexorder-lake"),
        lambda: reader.create_bucket(Bucket="mine"),
    ]
    for call in refused:
        with pytest.raises(ClientError, match="AccessDenied"):
            call()
    assert json.loads(policy)["Statement"][0]["Action"] == ["s3:GetObject"]
