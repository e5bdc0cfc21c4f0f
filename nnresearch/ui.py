"""`python -m nnresearch.ui`: MLflow's UI on this project's runs, each study opening as a dashboard.

    python -m nnresearch.ui                                     # ./mlflow.db on http://127.0.0.1:5000
    python -m nnresearch.ui --uri sqlite:///other.db --port 0   # another store, any free port
    python -m nnresearch.ui --uri http://127.0.0.1:5000         # a tracking server already is the UI

For a local store (SQLite file, `file:` directory, or a database URI) it starts `mlflow server` on
127.0.0.1 in its own process group, waits until it answers, prints the URL of the UI and of each
study's dashboard, and stops it (the whole group) on Ctrl-C. The server's log goes to a file whose
path it prints. Before starting, every study in the store gets its dashboard refreshed
(`refresh_dashboards`; `--no-dashboards` leaves the store untouched).

Ground floor, beside `tracking.py`: knows MLflow and the store's URI rules (`stores.py`), nothing of Hydra or of
the network code.

The dashboards themselves (descriptions, saved chart views) are `nnresearch.dashboards`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from nnresearch import dashboards, stores

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.25


class UIError(RuntimeError):
    """A problem the user can fix (busy port, missing store, server that never answered)."""


# --------------------------------------------------------------------------------------------
# Stores and ports


def check_store(uri: str | None) -> str:
    """The resolved URI of an existing local store; UIError naming it if there is none.

    An HTTP(S) URI is returned as it is: that server already is the UI.
    """
    try:
        uri = stores.resolve_uri(uri)
    except stores.TrackingURIError as err:
        raise UIError(str(err)) from None
    db = stores.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UIError(f"no MLflow store at {db} ({uri}); run an experiment first "
                      "(python -m nnresearch.run) or pass --uri for your store")
    if uri.startswith("file:"):
        folder = Path(unquote(urlparse(uri).path))
        if not folder.is_dir():
            raise UIError(f"no MLflow file store at {folder} ({uri}); pass --uri for your store")
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host:port` now (bound the way uvicorn binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise UIError(f"cannot listen on {host}:{port}: {err}") from err
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port that nothing listens on at `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def choose_port(host: str, port: int) -> int:
    """`port` if it is free (0 means any free port), else UIError naming it."""
    if port == 0:
        return free_port(host)
    if not 0 < port < 65536:
        raise UIError(f"--port must be between 1 and 65535 (or 0 for any free port), got {port}")
    if not port_is_free(host, port):
        raise UIError(f"port {port} on {host} is busy (another MLflow UI?); choose another with "
                      "--port P, or --port 0 for any free one")
    return port


# --------------------------------------------------------------------------------------------
# The server process


def server_command(uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` for the store `uri` on `host:port`, with one worker."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def server_env(uri: str) -> dict[str, str]:
    """The server's environment: no telemetry, no GenAI job runner (a dozen idle processes),
    MLflow 3's opt-in for `file:` stores when the store is one."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if uri.startswith("file:"):
        env.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return env


def start_server(uri: str, host: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start `mlflow server` in a new process group, its output going to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(server_command(uri, host, port), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=server_env(uri), start_new_session=True)


def _log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an MLflow server answers `GET <url>/health` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path,
                     timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once `url` answers; UIError (with the log's tail) if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(url):
            return
        if process.poll() is not None:
            raise UIError(f"mlflow server exited with code {process.returncode} before answering at "
                          f"{url}; its log ({log_path}) ends with:\n{_log_tail(log_path)}")
        time.sleep(POLL_S)
    raise UIError(f"mlflow server did not answer at {url} within {timeout_s:.0f} s; its log "
                  f"({log_path}) ends with:\n{_log_tail(log_path)}")


def stop_server(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the server's process group (uvicorn and all), SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # a worker that outlived its parent
    return process.returncode


@contextlib.contextmanager
def serve(uri: str | None = None, host: str = DEFAULT_HOST, port: int = 0, *,
          log_path: str | os.PathLike[str] | None = None,
          timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run MLflow's UI on the local store `uri` while the block runs; yields its base URL.

    `port=0` picks a free port. The server is stopped when the block ends, however it ends.
    """
    uri = check_store(uri)
    if is_http(uri):
        raise UIError(f"{uri} is a tracking server: it already serves the UI")
    port = choose_port(host, port)
    own_log = log_path is None
    if own_log:
        handle, log_path = tempfile.mkstemp(prefix="nnresearch-ui-", suffix=".log")
        os.close(handle)
    log = Path(log_path)
    url = f"http://{host}:{port}"
    process = start_server(uri, host, port, log)
    try:
        wait_until_ready(url, process, log, timeout_s)
        yield url
    finally:
        stop_server(process)
    if own_log:  # kept when something went wrong, for its last lines
        log.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nnresearch.ui",
                                     description="Start MLflow's UI on this project's runs, each study a dashboard.")
    parser.add_argument("--uri", default=None,
                        help="tracking store or server (default: $MLFLOW_TRACKING_URI if set, else "
                             "sqlite:///mlflow.db in this directory)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on; 0 = any free port "
                        f"(default: {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--no-dashboards", action="store_true",
                        help="do not refresh the studies' dashboards (leave the store untouched)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                        help=f"seconds to wait for the server to answer (default: {READY_TIMEOUT_S:.0f})")
    return parser.parse_args(argv)


def _refresh_or_warn(uri: str) -> dict[str, str]:
    """`refresh_dashboards`, or a warning and none: the UI is worth starting without them."""
    try:
        return dashboards.refresh_dashboards(uri)
    except Exception as err:  # noqa: BLE001 - e.g. a store of an older MLflow; the server will say
        print(f"warning: dashboards not refreshed ({type(err).__name__}: {err})", file=sys.stderr)
        return {}


def _announce(url: str, prepared: Mapping[str, str]) -> None:
    print(f"MLflow UI: {url}", flush=True)
    for name, experiment_id in prepared.items():
        print(f"  {name}: {url}{dashboards.dashboard_path(experiment_id)}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (and SIGINT, even where a shell ignored it) -> KeyboardInterrupt: stop the server."""
    raise KeyboardInterrupt


def _show_server(uri: str, open_browser: bool) -> int:
    """An HTTP tracking URI: print it (that server is the UI); 1 if nothing answers there."""
    if not answers(uri):
        print(f"error: nothing answers at {uri}; start the tracking server first", file=sys.stderr)
        return 1
    print(f"MLflow UI: {uri} (a tracking server already is the UI)", flush=True)
    if open_browser:
        webbrowser.open(uri)
    return 0


def _serve_until_interrupted(uri: str, args: argparse.Namespace) -> int:
    """Start the server for a local store, announce it, wait for Ctrl-C, stop it."""
    port = choose_port(args.host, args.port)
    prepared = {} if args.no_dashboards else _refresh_or_warn(uri)
    log = Path(tempfile.gettempdir()) / f"nnresearch-ui-{port}.log"
    log.write_bytes(b"")
    url = f"http://{args.host}:{port}"
    print(f"starting MLflow's UI at {url} (store {uri}) ...", flush=True)
    process = start_server(uri, args.host, port, log)
    try:
        wait_until_ready(url, process, log, args.timeout)
        _announce(url, prepared)
        print(f"server log: {log}\nCtrl-C stops it.", flush=True)
        if not args.no_browser:
            webbrowser.open(f"{url}/#/experiments?workflowType=machine_learning")
        process.wait()
        print(f"error: mlflow server stopped (code {process.returncode}); log: {log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stop_server(process)
        log.unlink(missing_ok=True)  # a clean stop leaves no log behind
        raise
    finally:
        stop_server(process)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uri = check_store(args.uri)
        if is_http(uri):
            return _show_server(uri, not args.no_browser)
        return _serve_until_interrupted(uri, args)
    except UIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped the MLflow UI", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
