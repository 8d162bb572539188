"""Accounts, licence tiers, sessions, Telegram links and personal access tokens.

SQLite under the home folder by default, PostgreSQL by ``gateway.database_url``;
the schema is kept by Alembic migrations (:func:`~gateway.accounts.db.migrate`).
"""
