"""Leader election so exactly one chain watcher runs across workers and replicas.

PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection. The lock lives exactly as long
as that session, so a crashed leader (or a dropped connection) frees it with no stale state.
SQLite: an exclusive ``flock`` on ``<db>.watcher.lock`` next to the database; the kernel drops
it when the process dies. Only one host can write a SQLite file anyway, so a file lock is
sufficient there. Followers retry every ``retry_seconds``, so one of them takes over when the
leader goes away.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol

from sqlalchemy.engine import make_url

__all__ = [
    "FileLock",
    "LeaderElector",
    "Lock",
    "PgAdvisoryLock",
    "advisory_key",
    "lock_for_database",
    "migration_lock",
    "nonce_lock",
]

log = logging.getLogger(__name__)

# The base of every advisory key: "piecewrk" in ASCII.
ADVISORY_KEY: Final = int.from_bytes(b"piecewrk", "big") & 0x7FFF_FFFF_FFFF_FFFF


def advisory_key(db_url: str, purpose: str = "watcher") -> int:
    """The advisory-lock key for one deployment: every worker on ``db_url`` computes the same.

    Advisory locks are scoped to a database, not a schema, so two deployments sharing one
    database in different schemas (``options=-csearch_path=...``) would otherwise elect one
    watcher between them and leave the other unwatched. The key therefore hashes the
    connection options (the schema) with the purpose; host and credentials are left out so
    replicas that reach the database by different addresses still agree.
    """
    url = make_url(db_url)
    scope = f"{purpose}|{url.database}|{url.query.get('options', '')}"
    digest = hashlib.blake2b(scope.encode(), digest_size=8).digest()
    return (ADVISORY_KEY ^ int.from_bytes(digest, "big")) & 0x7FFF_FFFF_FFFF_FFFF


class Lock(Protocol):
    def try_acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


class PgAdvisoryLock:
    """A session-level advisory lock held on its own connection (never a pooled one)."""

    def __init__(self, url: str, key: int | None = None) -> None:
        # SQLAlchemy URLs carry a driver (``postgresql+psycopg://``); libpq wants it without.
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._key = advisory_key(url) if key is None else key
        self._conn: Any = None

    def try_acquire(self) -> bool:
        import psycopg  # noqa: PLC0415 - lazily: SQLite-only deployments never load it

        if self._conn is None:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        won = bool(row and row[0])
        if not won:
            self._close()
        return won

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except Exception:  # any failure means the session, and with it the lock, is gone
            self._close()
            return False
        return True

    def release(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class FileLock:
    """An exclusive non-blocking ``flock`` on a file; released when closed or the process dies."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        handle = open(self._path, "ab")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class _AlwaysLock:
    """In-memory SQLite: one process by definition, so it always leads."""

    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False


def lock_for_database(db_url: str) -> Lock:
    """The right leadership lock for the service's database URL."""
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        return PgAdvisoryLock(db_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return _AlwaysLock()
        path = Path(database)
        return FileLock(path.with_name(path.name + ".watcher.lock"))
    raise ValueError(f"no leader lock for database backend {url.get_backend_name()!r}")


class LeaderElector:
    """Tries to win ``lock`` now and then every ``retry_seconds``; runs ``lead`` while leading.

    ``lead(stop)`` runs in its own thread and must return soon after ``stop`` is set, which
    happens on shutdown and also when the lock is found lost (e.g. the PostgreSQL session
    dropped): another worker may already lead by then, and two watchers must not overlap.
    """

    def __init__(
        self,
        lock: Lock,
        lead: Callable[[threading.Event], None],
        *,
        retry_seconds: float = 5.0,
    ) -> None:
        self._lock = lock
        self._lead = lead
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="piecework-leader", daemon=True)
        self.is_leader = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                won = self._lock.try_acquire()
            except Exception as exc:  # the database may be briefly down; keep trying
                log.warning("leader election failed: %s", exc)
                won = False
            if won:
                self._lead_term()
            self._stop.wait(self._retry)
        self._lock.release()

    def _lead_term(self) -> None:
        term = threading.Event()
        worker = threading.Thread(target=self._guarded_lead, args=(term,), name="piecework-watcher")
        self.is_leader = True
        log.info("won watcher leadership (pid %d)", os.getpid())
        worker.start()
        try:
            while worker.is_alive() and not self._stop.wait(self._retry):
                if not self._lock.held():
                    log.warning("watcher leadership lost; stopping the watcher")
                    break
        finally:
            term.set()
            # The watcher's waits all watch ``term``, so it ends within one RPC call. Never
            # give the lock up (or start another term) while it still runs: two watchers
            # would then send with one key.
            while worker.is_alive():
                worker.join(5)
                if worker.is_alive():
                    log.warning("the old watcher has not stopped yet; still waiting for it")
            self.is_leader = False
            self._lock.release()

    def _guarded_lead(self, term: threading.Event) -> None:
        try:
            self._lead(term)
        except Exception:
            log.exception("watcher stopped with an error")


@contextlib.contextmanager
def migration_lock(db_url: str) -> Iterator[None]:
    """Serialise schema migrations across workers starting at the same moment.

    Without it two workers on a fresh database both run ``CREATE TABLE`` and one crashes.
    PostgreSQL: a blocking session advisory lock (a different key from the leader's);
    SQLite files: a blocking ``flock`` next to the database; in-memory SQLite: nothing.
    """
    url = make_url(db_url)
    backend = url.get_backend_name()
    if backend == "postgresql":
        import psycopg  # noqa: PLC0415 - see PgAdvisoryLock

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (advisory_key(db_url, "migrate"),))
            try:
                yield
            finally:
                conn.execute(
                    "SELECT pg_advisory_unlock(%s)", (advisory_key(db_url, "migrate"),)
                )
        return
    database = url.database or ""
    if backend != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield
        return
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate.lock"), "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def nonce_lock(db_url: str) -> Callable[[], contextlib.AbstractContextManager[object]] | None:
    """A cross-process lock held while a nonce is picked and its transaction sent, so every
    worker (and replica) signing with the payee key asks the node for the next nonce instead
    of counting on its own: PostgreSQL advisory lock, or a ``flock`` next to a SQLite file.
    None for in-memory SQLite (one process)."""
    url = make_url(db_url)
    backend = url.get_backend_name()
    if backend == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        key = advisory_key(db_url, "nonce")

        @contextlib.contextmanager
        def pg() -> Iterator[object]:
            import psycopg  # noqa: PLC0415 - see PgAdvisoryLock

            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                try:
                    yield conn
                finally:
                    with contextlib.suppress(Exception):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

        return pg
    database = url.database or ""
    if backend != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    target = path.with_name(path.name + ".nonce.lock")

    @contextlib.contextmanager
    def flock() -> Iterator[object]:
        with open(target, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    return flock
