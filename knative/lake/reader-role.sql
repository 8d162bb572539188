-- The agents' read-only role on the lake's Iceberg catalog (pyiceberg's SqlCatalog tables,
-- made by the lake writer). Run it once as the catalog database's owner, in that database:
--   psql -v ON_ERROR_STOP=1 -v role=dexorder_lake_reader -v password='...' \
--        -d <catalog database> -f knative/lake/reader-role.sql
-- Then the agents' Secret (dexorder-agent-lake) gets
--   lake.catalog_uri: postgresql+psycopg2://dexorder_lake_reader:<password>@<host>/<catalog database>
-- and your pg_hba.conf admits this role to this database only, from the agents' pod
-- network, e.g.  hostssl <catalog database> dexorder_lake_reader 10.244.0.0/16 scram-sha-256
-- tests/knative/test_lake_reader.py runs this file against PostgreSQL: the role reads the
-- table and can change nothing.
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOINHERIT
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    -- every agent may hold a connection or two: a bound keeps them from starving the writer
    CONNECTION LIMIT 200;
-- whatever the client asks, its sessions are read-only and short
ALTER ROLE :"role" SET default_transaction_read_only = on;
ALTER ROLE :"role" SET statement_timeout = '30s';
ALTER ROLE :"role" SET idle_in_transaction_session_timeout = '60s';
SELECT current_database() AS catalog_db \gset
GRANT CONNECT ON DATABASE :"catalog_db" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";
-- where each table's current metadata file is, and the namespaces: nothing else
GRANT SELECT ON TABLE iceberg_tables, iceberg_namespace_properties TO :"role";
