"""Where runs are stored: tracking URIs made absolute, SQLite stores created once, servers checked.

Ground floor: this module knows MLflow's stores and nothing of runs, the network code or Hydra.

- URIs are made absolute (`resolve_uri`), so Hydra changing the working directory or a joblib
  worker starting elsewhere never moves the store. The default is `MLFLOW_TRACKING_URI` if set, else
  MLflow 3's `sqlite:///mlflow.db`.
- A store is checked without being opened (`check_store`: a scheme some MLflow store has, a
  writable place for a SQLite file, a server that answers MLflow's API), cheaply enough to run
  before every job of a sweep.
- A fresh SQLite store is created under a file lock (`ensure_store`): MLflow's schema migrations
  race when several processes create the same database at once.
- A store only read (the UI, the analyses) is checked to exist and to be MLflow's first
  (`check_readable_store`): MLflow opening a missing, empty or foreign SQLite file would make it a store.
- A server that stops answering mid-run is given up on after about a minute of MLflow's retries
  (`HTTP_RETRY_DEFAULTS`) and recognised as such (`server_lost`), so the run can stop asking it.

Lock files sit next to the database as `<db>-lock`, like SQLite's own `-journal` and `-wal`
sidecars.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from filelock import FileLock

DEFAULT_URI = "sqlite:///mlflow.db"
# The schemes of MLflow's own tracking stores (a database scheme may name its driver: postgresql+psycopg2);
# plugins add theirs as entry points of the group `mlflow.tracking_store`.
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy dialects MLflow's SQL store takes beside SQLite
MLFLOW_SCHEMES = ("sqlite", "http", "https", "file", *DATABASE_SCHEMES, "databricks", "databricks-uc", "uc")
BARE_SCHEMES = ("databricks", "databricks-uc", "uc")  # a URI of the scheme alone, which MLflow takes too
URI_EXAMPLES = "sqlite:///path/to/mlflow.db (the default), file:path/to/mlruns or http://host:port"
HTTP_TIMEOUT_S = 5.0
PROBE_PATH = "api/2.0/mlflow/experiments/get?experiment_id=0"
# What MLflow's client sends a server's proxy as credentials.
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME")
LOCK_TIMEOUT_S = 300.0
# MLflow retries a failed call to a server with exponential back-off (urllib3 sleeps factor * 2**(n-1)
# seconds after the n-th failure, none after the first): 5 retries of factor 2 wait 4 + 8 + 16 + 32 = 60 s,
# time for a server to restart, where MLflow's own 7 wait about 4 minutes per call. Set either
# variable to override.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
MLFLOW_TABLES = ("alembic_version", "experiments", "runs")  # what every MLflow SQLite store has
# The first table MLflow creates in a new SQLite store (its initial models, in dependency order); another
# process's store in the making has it from its first table on, or no table yet.
FIRST_MLFLOW_TABLE = "experiments"
READ_FIX = "run an experiment first (python -m nnresearch.run) or pass --uri for your store"

_READY_STORES: set[str] = set()
_CHECKED_STORES: set[str] = set()


class TrackingURIError(ValueError):
    """A tracking URI no MLflow store can have: no scheme, an unknown one, an in-memory database."""


class UnreadableStoreError(ValueError):
    """A local store that cannot be read as it is: no SQLite file or `file:` folder at its URI, or a
    file that is not an MLflow SQLite database (empty, not SQLite, SQLite without MLflow's tables)."""


def resolve_uri(uri: str | None = None) -> str:
    """The absolute tracking URI for `uri`.

    None or "" means the environment's `MLFLOW_TRACKING_URI` (as for every MLflow tool) when it is
    set, else MLflow 3's default `sqlite:///mlflow.db`.

    `sqlite:///relative.db` and `file:relative` are made absolute against the current working
    directory; `http(s)://` URIs pass through (without a trailing slash); other `scheme://` URIs
    (postgresql, mysql, databricks) pass through untouched if some MLflow store has their scheme.
    TrackingURIError for a URI without a scheme, with an unknown one, or of an in-memory database.
    """
    if uri is None or uri == "":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if not isinstance(uri, str):
        raise TypeError(f"tracking uri must be a string or None, got {type(uri).__name__}: {uri!r}")
    if uri.startswith("sqlite:"):
        return _absolute_sqlite_uri(uri)
    if uri.startswith(("http://", "https://")):
        if not urlparse(uri).hostname:
            raise TrackingURIError(f"tracking uri {uri!r} names no host; use {URI_EXAMPLES}")
        return uri.rstrip("/")
    if uri.startswith("file:"):
        return _absolute_file_uri(uri)
    if uri.lower() in BARE_SCHEMES:  # Databricks' default profile
        return uri
    if "://" not in uri:
        raise TrackingURIError(f"tracking uri {uri!r} has no scheme; use {URI_EXAMPLES}")
    _check_scheme(uri)
    return uri


@functools.cache
def _known_schemes() -> tuple[str, ...]:
    """MLflow's own tracking-store schemes and those its installed plugins register (read once: the
    scan of the installed packages takes milliseconds, and every store call resolves its URI)."""
    from importlib.metadata import entry_points

    return (*MLFLOW_SCHEMES, *(point.name for point in entry_points(group="mlflow.tracking_store")))


def _check_scheme(uri: str) -> None:
    """TrackingURIError unless `uri`'s scheme is one MLflow has a tracking store for (a plugin's included)."""
    import difflib

    scheme = uri.partition("://")[0].partition("+")[0].lower()  # MLflow reads schemes in any case
    known = _known_schemes()
    if scheme not in known:
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f"did you mean {close[0]}://? " if close else ""
        raise TrackingURIError(f"tracking uri {uri!r} has the scheme {scheme!r}, which no MLflow store has; {hint}"
                               f"use {URI_EXAMPLES} (MLflow's schemes: {', '.join(known)})")


def _absolute_sqlite_uri(uri: str) -> str:
    """`sqlite:///rel.db` -> `sqlite:////abs/rel.db`; in-memory databases are refused."""
    prefix = "sqlite:///"
    path, _, query = uri.removeprefix(prefix).partition("?")
    if not uri.startswith(prefix) or path in ("", ":memory:"):
        raise TrackingURIError(
            f"tracking uri {uri!r} names no database file (an in-memory store vanishes with the "
            "process); use sqlite:///mlflow.db or sqlite:////absolute/path/mlflow.db"
        )
    path = os.path.abspath(os.path.expanduser(path))
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def _absolute_file_uri(uri: str) -> str:
    """`file:relative/mlruns` -> `file:///abs/relative/mlruns`; remote hosts pass through."""
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return uri
    return Path(os.path.abspath(os.path.expanduser(unquote(parsed.path)))).as_uri()


def file_store_folder(uri: str) -> Path:
    """The folder of a `file:` store's URI."""
    return Path(unquote(urlparse(uri).path))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a resolved `sqlite:` URI, or None for any other kind of store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].partition("?")[0])


def _lock_path(db: Path) -> Path:
    """The lock file guarding store creation and sweep-parent creation for database `db`."""
    return db.with_name(db.name + "-lock")


def store_lock(uri: str) -> AbstractContextManager[Any]:
    """An inter-process lock for a local SQLite store; no lock for any other store."""
    db = sqlite_path(uri)
    return nullcontext() if db is None else FileLock(_lock_path(db), timeout=LOCK_TIMEOUT_S)


def check_store(uri: str | None = None) -> str:
    """The resolved URI of a store this process can use, checked without opening it (cheap enough for
    every job of a sweep before the first starts): a URI some MLflow store has (TrackingURIError), a
    writable place for a SQLite file (PermissionError) that is MLflow's if it exists and is not empty
    (UnreadableStoreError: a folder, another file, another program's database), a server that answers
    (ConnectionError). A SQLite store another job is making (no table yet, or some of MLflow's) is
    let through: `ensure_store` waits for it under the store's lock."""
    uri = resolve_uri(uri)
    if uri in _CHECKED_STORES:
        return uri
    db = sqlite_path(uri)
    if db is not None:
        _check_writable(db)
        if db.exists() and not (db.is_file() and db.stat().st_size == 0):  # an empty file becomes the store
            _check_sqlite_store(uri, db, fix="set tracking.uri to your store", in_the_making=True)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("file:") and urlparse(uri).netloc in ("", "localhost"):
        _check_writable(file_store_folder(uri))  # the folder MLflow's file store makes and writes
    elif uri.split(":", 1)[0].split("+", 1)[0].lower() in DATABASE_SCHEMES:
        _check_driver(uri)
    _CHECKED_STORES.add(uri)
    return uri


def _check_driver(uri: str) -> None:
    """TrackingURIError unless the Python driver of a database URI (`postgresql[+driver]://...`) is
    installed: SQLAlchemy imports it only when MLflow first connects, mid-run."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    try:
        url.get_dialect().import_dbapi()
    except ImportError as err:
        raise TrackingURIError(f"tracking uri {url.render_as_string(hide_password=True)!r} needs the database driver "
                               f"{err.name!r}, which is not installed: install it, or name an installed driver "
                               f"({url.get_backend_name()}+<driver>://...)") from None


def check_readable_store(uri: str | None = None) -> str:
    """The resolved URI of a store to read (not to write), checked without MLflow opening it: opening
    a missing, empty or foreign SQLite file through MLflow creates a store in it (its migrations).

    - `sqlite:`: the file must exist and be an MLflow database (SQLite's header and MLflow's tables,
      read with SQLite in read-only mode, nothing written); a database that SQLite finds locked is
      let through (MLflow waits for it, or says so).
    - `file:`: the folder must exist.
    - Any other URI (a tracking server, a database server) is returned resolved, unprobed:
      `check_store` probes a server.

    TrackingURIError for a URI no store can have (`resolve_uri`), UnreadableStoreError naming the
    path and what is wrong with it otherwise; both are ValueErrors with a one-line message.
    """
    uri = resolve_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite_store(uri, db)
    elif uri.startswith("file:"):
        folder = file_store_folder(uri)
        if not folder.is_dir():
            raise UnreadableStoreError(f"no MLflow file store at {folder} ({uri}); pass --uri for your store")
    return uri


def _check_sqlite_store(uri: str, db: Path, fix: str = "pass --uri for your store", *, in_the_making: bool = False) -> None:
    """UnreadableStoreError unless `db` is an MLflow SQLite database, or, `in_the_making`, one that
    MLflow may be creating now (no table, or `FIRST_MLFLOW_TABLE` among them); reads it, never writes it."""
    import sqlite3

    if not db.exists():
        raise UnreadableStoreError(f"no MLflow store at {db} ({uri}); {READ_FIX}")

    def not_a_store(what: str) -> UnreadableStoreError:
        return UnreadableStoreError(f"{db} is not an MLflow store ({what}); {fix}")

    if not db.is_file():
        raise not_a_store("not a file")
    try:
        with open(db, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as err:
        raise UnreadableStoreError(f"cannot read the MLflow store {db}: {err.strerror or err}") from None
    if not header:
        raise not_a_store("an empty file")
    if header != SQLITE_HEADER:
        raise not_a_store("not a SQLite database")
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError:
        return  # locked, or a journal to roll back: MLflow's own open waits for it or says what it is
    except sqlite3.DatabaseError as err:
        raise not_a_store(f"SQLite: {err}") from None
    if in_the_making and (not tables or FIRST_MLFLOW_TABLE in tables):
        return
    if not set(MLFLOW_TABLES) <= tables:
        raise not_a_store("a SQLite database without MLflow's tables")


def ensure_store(uri: str | None = None) -> str:
    """Make the store at `uri` usable and return its resolved URI; done once per process.

    The checks of `check_store`, then for SQLite the creation of a fresh database (MLflow's
    migrations) while holding `<db>-lock`, so parallel jobs never race in the migrations. `file:`:
    MLflow 3 refuses its file store unless `MLFLOW_ALLOW_FILE_STORE=true`; asking for a `file:` URI
    sets it in this process unless it is already set. A server's: MLflow's retries are bounded to about
    a minute (`HTTP_RETRY_DEFAULTS`, unless set). Other stores are used as they are.
    """
    uri = check_store(uri)
    if uri in _READY_STORES:
        return uri
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"cannot create the directory of the MLflow store {db}: {err}") from err
        with store_lock(uri):
            _open_sqlite(uri, db)
    elif uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif uri.startswith(("http://", "https://")):
        for name, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)
    _READY_STORES.add(uri)
    return uri


class StoreLockedError(OSError):
    """Another process holds the SQLite store's write lock longer than SQLite waits."""


def _open_sqlite(uri: str, db: Path) -> None:
    """Open (and on first use migrate) the SQLite store at `uri`; StoreLockedError naming `db` when
    another process holds its lock (an open transaction of a DB browser, a stuck writer)."""
    from mlflow import MlflowClient  # not at the top: checking a store needs no MLflow
    from sqlalchemy.exc import OperationalError

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except OperationalError as error:
        if "database is locked" not in str(error):
            raise
        raise StoreLockedError(f"the MLflow store {db} is locked by another process (SQLite: database is locked, "
                               "after waiting for it); run again once that process lets go, or use another store") from None


def _check_writable(db: Path) -> None:
    """Raise PermissionError naming `db` unless it can be written, without creating anything: the file
    and its folder if it exists, else the nearest existing folder on its path (`ensure_store` creates
    the rest)."""
    fix = "set tracking.uri to a writable place, e.g. sqlite:///mlflow.db in your project"
    existing = next(path for path in (db, *db.parents) if path.exists())
    if existing != db and not existing.is_dir():
        raise PermissionError(f"cannot create the directory of the MLflow store {db}: {existing} is not a directory; {fix}")
    for target in (db.parent, db) if existing == db else (existing,):
        if not os.access(target, os.W_OK):
            raise PermissionError(f"the MLflow store {db} is not writable ({target}); {fix}")


def _check_server(uri: str) -> None:
    """Raise ConnectionError naming `uri` unless an MLflow server answers there. The probe is an API
    call (`experiments/get` of the default experiment), not `/health`, which MLflow answers from any
    host name: a JSON answer, even an error, or 401 (authentication, which MLflow's client sends) is
    a server; 403 in plain text is its `--allowed-hosts` refusing this host name (unless credentials
    are set for a proxy), 404 in HTML no MLflow at that path."""
    try:
        urllib.request.urlopen(f"{uri}/{PROBE_PATH}", timeout=HTTP_TIMEOUT_S).close()
    except urllib.error.HTTPError as err:
        with_credentials = any(os.environ.get(name) for name in CREDENTIAL_VARIABLES)
        if "json" in err.headers.get("Content-Type", "") or err.code == 401 or (err.code == 403 and with_credentials):
            return
        reason = {403: "it refuses this host name (the server's --allowed-hosts)",
                  404: "it has no MLflow server at that path"}.get(err.code, "check its logs")
        raise ConnectionError(f"the server at {uri} answers {err.code} {err.reason} to an MLflow API call: {reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(
            f"no MLflow tracking server answers at {uri} ({err}); start one with "
            f"`mlflow server --port {urlparse(uri).port or 5000}` or use a sqlite:/// store"
        ) from err


def forget_store(uri: str) -> None:
    """Check the store at `uri` afresh where it is next used: its server stopped answering. A sweep's
    next job in this process then fails at the quick probe of `check_store` (or finds it back), instead
    of waiting through MLflow's retries again."""
    _CHECKED_STORES.discard(uri)
    _READY_STORES.discard(uri)


def server_lost(error: BaseException) -> bool:
    """Whether `error`, raised by an MLflow client call, means its server stopped answering: a refused
    or broken connection, a timeout, or an error status every time MLflow tried (requests' ConnectionError,
    Timeout or RetryError in the exception's chain, which MLflow wraps in an MlflowException)."""
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import RetryError, Timeout

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (RequestsConnectionError, RetryError, Timeout)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def lost_reason(error: BaseException) -> str:
    """The innermost message of `error`'s chain, without urllib3's connection-pool preamble:
    "Failed to establish a new connection: [Errno 111] Connection refused"."""
    innermost = error
    while (innermost.__cause__ or innermost.__context__) is not None:
        innermost = innermost.__cause__ or innermost.__context__
    reason = getattr(innermost.args[0], "reason", None) if innermost.args else None
    return str(reason or innermost).split("): ", 1)[-1]
