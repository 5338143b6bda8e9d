"""Driver exceptions, recognised in exactly one place.

Store modules catch ``sqlalchemy.exc.IntegrityError`` and ask these predicates what it was,
then raise a domain error from :mod:`hutch.shared.errors` with ``raise ... from exc``. They
work for both drivers hutch ships: ``sqlite3`` (through aiosqlite) and asyncpg.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError

from hutch.shared.errors import HutchError

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_UNIQUE_VIOLATION = "23505"
_PG_FOREIGN_KEY_VIOLATION = "23503"


class SchemaMismatchError(HutchError):
    """The database's migration head is not the one this build of hutch expects.

    Raised at start-up (like e2b's ``expectedMigrationTimestamp`` check) so that an API
    never runs against a schema it was not written for.
    """


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    # SQLAlchemy's aiosqlite adapter re-raises sqlite3's exceptions as they are.
    return orig if isinstance(orig, sqlite3.Error) else None


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a UNIQUE or PRIMARY KEY violation, on SQLite or PostgreSQL."""
    if _sqlstate(exc) == _PG_UNIQUE_VIOLATION:
        return True
    err = _sqlite_error(exc)
    if err is None:
        return False
    name = getattr(err, "sqlite_errorname", "")
    if name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return True
    return "UNIQUE constraint failed" in str(err)


def is_foreign_key_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a FOREIGN KEY violation, on SQLite or PostgreSQL."""
    if _sqlstate(exc) == _PG_FOREIGN_KEY_VIOLATION:
        return True
    err = _sqlite_error(exc)
    if err is None:
        return False
    if getattr(err, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return True
    return "FOREIGN KEY constraint failed" in str(err)
