"""The control plane's SQL store (SQLite by default, PostgreSQL for scale-out).

Layout (one concept per module):

* ``base.py``: the Protocols the service layer depends on (no SQLAlchemy imported there);
* ``engine.py``: async engines, SQLite pragmas, ``write_transaction``;
* ``tables.py``: the schema; ``migrations/``: Alembic, ``upgrade_to_head`` and the head check;
* ``teams.py``, ``keys.py``, ``sandboxes.py``, ``templates.py``, ``volumes.py``: the
  implementations;
* ``errors.py``: the one place where driver exceptions are recognised.

This package's ``__init__`` imports nothing, so that importing ``hutch.api.store.base`` does
not pull in SQLAlchemy. Use :func:`hutch.api.store.sql.open_sql_store` to get a store.
"""
