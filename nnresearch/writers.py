"""How an MLflow sink's writes reach the store: on the calling thread, or through a writer process.

Most of a tracked run's tracking time is spent inside MLflow's SQLAlchemy store: about 3.5 ms per
`log_batch` plus 0.1 ms per metric value (measured on 2026-12-05). All of it is Python code that
holds the GIL. Moving it to a writer *thread* did not help (tried on 2026-12-05), because that
thread's Python competes with the training loop for the GIL. A writer *process* takes the work off
the training process completely: on two cores it writes while the training goes on.

A write is `(method, args, kwargs)`: the name of an `MlflowClient` method and its arguments. Both
writers make the same promises:

- writes reach the store in call order;
- a write that raises is kept, and `finish()` tries it once more. Its error goes to the caller:
  inline, from the call itself; through the process, from the next call or from `finish()`. So the
  run ends FAILED and loses nothing;
- `finish()` returns only when every write is in the store.

`ProcessWriter` is a `fork` of the training process, made when the run opens. It shares the
client's configuration (and, in tests, its patched methods) without importing MLflow again
(~2.5 s). Its first act is to drop the database connections it inherited
(`engine.dispose(close=False)`, as SQLAlchemy prescribes after a fork). It ignores SIGINT and
SIGTERM: a Ctrl-C at a terminal reaches the whole process group, and ending the run still needs
the writer. It exits when the training process closes the pipe, after writing everything it was
sent, so not even a SIGKILL of the training process loses a write already handed over. If the
writer dies, the training process writes whatever it had not acknowledged itself, in order, and
carries on inline.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlflow import MlflowClient

Write = tuple[str, tuple[Any, ...], dict[str, Any]]

WRITERS = ("auto", "process", "inline")


@contextmanager
def signals_held() -> Iterator[None]:
    """Let a store write finish before SIGINT / SIGTERM act on it, then let them act.

    A write cut in half can leave the run RUNNING (an interrupted final flush skips the final
    status), a SQLite transaction open that keeps the database locked for the rest of the process,
    or half a message in the writer's pipe. A second signal during the write is not held: pressing
    Ctrl-C twice stops at once. Main thread only (signal handlers live there); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, frame: object) -> None:
        received.append(signum)
        for other, handler in previous.items():
            signal.signal(other, handler)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not None:  # None: a handler not set from Python, leave it alone
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


class Writer(Protocol):
    """Where a sink's store writes go (see the module docstring for the promises)."""

    flush_every_s: float

    def write(self, method: str, *args: Any, **kwargs: Any) -> None: ...

    def check(self) -> None: ...

    def finish(self) -> None: ...


class InlineWriter:
    """Writes on the calling thread: a call returns once the store has the write, or raises its error."""

    flush_every_s = 2.0  # metrics wait this long in the sink's buffer: one store write per ~2 s

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self._failed: list[Write] = []

    def write(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call `client.<method>(*args, **kwargs)` now; if it raises, keep it for `finish()` and re-raise."""
        self._apply((method, args, kwargs))

    def _apply(self, write: Write) -> None:
        method, args, kwargs = write
        with signals_held():
            try:
                getattr(self._client, method)(*args, **kwargs)
            except Exception:
                self._failed.append(write)
                raise

    def check(self) -> None:
        """Nothing to check: a failed write has raised at its call."""

    def keep_for_retry(self, writes: list[Write]) -> None:
        """Have `finish()` try `writes` too (before the failures of this writer's own calls)."""
        self._failed[:0] = writes

    def finish(self) -> None:
        """Try every write that failed once more, in order; raise the first error of a second failure."""
        failed, self._failed = self._failed, []
        errors = []
        for write in failed:
            try:
                self._apply(write)
            except Exception as error:
                errors.append(error)
        self._failed = []  # tried twice: the caller learns of it from the error
        if errors:
            raise errors[0]


class ProcessWriter:
    """Writes through a forked child process that holds its own connections to the store.

    `write` hands the write to the child (pickled through a pipe, ~0.1 ms for an epoch's metrics)
    and returns; the child writes in call order and answers each write with its error or None.
    """

    flush_every_s = 0.25  # sending costs the training process little; the final wait stays short

    def __init__(self, client: MlflowClient) -> None:
        context = multiprocessing.get_context("fork")
        # As the gc docs advise before a fork: the objects that exist now (imports, config, data) move
        # out of the collector's reach until `finish()`, so the child does not copy the pages that
        # collecting them would touch. The training process gains too: a collection during the run no
        # longer walks the start-up's objects (one took 55 ms) or runs their weakref callbacks, in
        # which a Ctrl-C arriving is lost (CPython ignores exceptions raised there).
        gc.freeze()
        self._frozen = True
        self._client = client
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(client, child_end, self._pipe), daemon=False,
                                        name="nnresearch-writer")
        try:
            with signals_held():
                self._process.start()
        except BaseException:
            gc.unfreeze()
            raise
        finally:
            child_end.close()
        self._sent: dict[int, Write] = {}  # handed to the child, not yet answered
        self._last_id = 0
        self._failed: list[Write] = []
        self._errors: list[BaseException] = []  # reported by the child, not yet raised
        self._inline: InlineWriter | None = None  # set once the child has gone

    def write(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Hand `client.<method>(*args, **kwargs)` to the child; raise an earlier write's error, if one failed."""
        if self._inline is not None:
            self._inline.write(method, *args, **kwargs)
            return
        self._read_answers(wait=False)
        self._last_id += 1
        self._sent[self._last_id] = (method, args, kwargs)
        try:
            with signals_held():
                self._pipe.send((self._last_id, (method, args, kwargs)))
        except OSError:
            self._take_over()
        self._raise_reported()

    def check(self) -> None:
        """Raise the error of a write that the child has reported failed (a poll of the pipe, ~µs)."""
        if self._inline is None:
            self._read_answers(wait=False)
        self._raise_reported()

    def finish(self) -> None:
        """Wait until the child has written everything and exited; retry the failed writes here, in
        order; raise the first error not raised yet (a write that failed during the wait, or twice)."""
        if self._inline is None:
            try:
                with signals_held():
                    self._pipe.send(None)
            except OSError:
                pass
            self._read_answers(wait=True)
            self._pipe.close()
            self._process.join()
            self._inline = InlineWriter(self._client)
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        self._inline.keep_for_retry(self._failed)
        self._failed = []
        retry_error = None
        try:
            self._inline.finish()
        except Exception as error:
            retry_error = error
        self._raise_reported()
        if retry_error is not None:
            raise retry_error

    def _read_answers(self, wait: bool) -> None:
        """Take the child's answers: all there are, or (`wait`) until every write has been answered."""
        while self._sent and (wait or self._pipe.poll()):
            try:
                write_id, error = self._pipe.recv()
            except (EOFError, OSError):
                self._take_over()
                return
            write = self._sent.pop(write_id)
            if error is not None:
                self._failed.append(write)
                self._errors.append(error)

    def _take_over(self) -> None:
        """The child has gone: write here, in order, what it had not answered, and stay inline."""
        self._process.join()
        self._pipe.close()
        print(f"nnresearch: the MLflow writer process ended unexpectedly (exit code {self._process.exitcode}); "
              f"writing {len(self._sent)} pending write(s) from the training process", file=sys.stderr)
        self._inline = InlineWriter(self._client)
        pending, self._sent = list(self._sent.values()), {}
        for method, args, kwargs in pending:
            try:
                self._inline.write(method, *args, **kwargs)
            except Exception as error:
                self._errors.append(error)

    def _raise_reported(self) -> None:
        if self._errors:
            error, self._errors = self._errors[0], self._errors[1:]
            raise error


def process_writer_unavailable(uri: str) -> str | None:
    """Why a `ProcessWriter` cannot serve the store at resolved `uri`, or None if it can.

    It needs `fork` (Linux; macOS's system frameworks are not fork-safe, Windows has no fork) and a
    SQLite store, whose connections it knows how to drop in the child; servers and other databases
    are written inline (an MLflow server already does the database work in its own process).
    """
    if sys.platform != "linux":
        return f"it needs fork, which is safe only on Linux (this is {sys.platform})"
    if not uri.startswith("sqlite:"):
        return f"it serves SQLite stores only ({uri} is not one)"
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not isinstance(getattr(SqlAlchemyStore, "_engine_map", None), dict):
        return "this MLflow version keeps its database engines where nnresearch cannot reset them after fork"
    return None


def choose_writer(kind: str, uri: str) -> str:
    """The writer (`process` or `inline`) that `kind`, one of WRITERS, means for resolved store `uri`.

    `auto` is `process` where a ProcessWriter can serve the store, else `inline`; asking for
    `process` where none can is a ValueError saying why.
    """
    if kind not in WRITERS:
        raise ValueError(f"tracking.writer={kind!r} is not one of {', '.join(WRITERS)}")
    if kind == "inline":
        return kind
    unavailable = process_writer_unavailable(uri)
    if unavailable is None:
        return "process"
    if kind == "process":
        raise ValueError(f"tracking.writer=process cannot be used here: {unavailable}; use auto or inline")
    return "inline"


def make_writer(kind: str, client: MlflowClient) -> Writer:
    """A ProcessWriter (`kind` "process") or an InlineWriter ("inline") for `client`; see `choose_writer`."""
    return ProcessWriter(client) if kind == "process" else InlineWriter(client)


def _serve(client: MlflowClient, pipe: Any, parents_end: Any) -> None:
    """The writer process: write what arrives, in order, answering each write, until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parents_end.close()  # else this process would hold the pipe open and never see the parent go
    _drop_inherited_connections()
    answering = True
    while True:
        try:
            message = pipe.recv()
        except EOFError:
            break
        if message is None:
            break
        write_id, (method, args, kwargs) = message
        error = None
        try:
            getattr(client, method)(*args, **kwargs)
        except Exception as raised:
            error = _picklable(raised)
        if answering:
            try:
                pipe.send((write_id, error))
            except OSError:
                answering = False  # the parent has gone; write the rest of what it sent anyway
    pipe.close()


def _drop_inherited_connections() -> None:
    """Forget the parent's pooled database connections without closing them (they are the parent's)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for engine in list(SqlAlchemyStore._engine_map.values()):
        engine.dispose(close=False)


def _picklable(error: Exception) -> Exception:
    """`error` itself if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
