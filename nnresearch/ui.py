"""`python -m nnresearch.ui`: MLflow's UI on this project's runs, each study opening as a dashboard.

    python -m nnresearch.ui                                     # ./mlflow.db on http://127.0.0.1:5000
    python -m nnresearch.ui --uri sqlite:///other.db --port 0   # another store, any free port
    python -m nnresearch.ui --uri http://127.0.0.1:5000         # a tracking server already is the UI

For a local store (SQLite file, `file:` directory, or a database URI) it starts `mlflow server` on
127.0.0.1 in its own process group, waits until it answers, prints the URL of the UI and of each
study's dashboard, and stops it (the whole group) on Ctrl-C, SIGTERM or SIGHUP (a closed terminal),
exiting 128 + the signal's number as a shell reports it (130, 143, 129). The server's log goes to a
private temporary file whose path it prints, removed when the server is stopped that way and kept
when the server fails. Before starting, every study in the store gets its dashboard refreshed
(`refresh_dashboards`; `--no-dashboards` leaves the store untouched). It never creates a store: a
missing one, or a file that is not an MLflow store, is refused in one line before anything starts
(`stores.check_readable_store`).

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
from typing import Any

from nnresearch import dashboards, stores

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.25
# Ctrl-C, `kill`, and the terminal closing: each stops the server, and the UI exits 128 + its number.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class UIError(RuntimeError):
    """A problem the user can fix (busy port, missing store, server that never answered)."""


class Stopped(KeyboardInterrupt):
    """A stop signal (`STOP_SIGNALS`) raised where the UI waits, so the server is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------------------------
# Stores and ports


def check_store(uri: str | None) -> str:
    """The resolved URI of an existing local store (`stores.check_readable_store`: never creates one);
    UIError naming it if there is none there or the file is not an MLflow store.

    An HTTP(S) URI is returned as it is: that server already is the UI.
    """
    try:
        return stores.check_readable_store(uri)
    except (stores.TrackingURIError, stores.UnreadableStoreError) as err:
        raise UIError(str(err)) from None


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:5000`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def base_url(host: str, port: int) -> str:
    return f"http://{host_port(host, port)}"


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    """The (family, address) pairs a server on `host:port` binds: every one `getaddrinfo` gives, as
    uvicorn's asyncio server binds them (IPv4 and IPv6 alike); UIError if `host` has none."""
    try:
        found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError) as err:  # socket.gaierror; UnicodeError for a malformed name
        where = host_port(host, port) if port else host
        raise UIError(f"cannot listen on {where}: no address for {host!r} ({err})") from None
    return list(dict.fromkeys((family, address) for family, _, _, _, address in found))


def _probe(family: socket.AddressFamily, address: tuple[Any, ...]) -> socket.socket:
    """A socket bound to `address` the way asyncio's server binds (SO_REUSEADDR; IPv6 only on IPv6)."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
    except BaseException:
        probe.close()
        raise
    return probe


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host:port` now, on every address of `host` (bound the way
    uvicorn binds); UIError if it cannot listen there at all (an unknown host, another machine's address)."""
    for family, address in _addresses(host, port):
        try:
            _probe(family, address).close()
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise UIError(f"cannot listen on {host_port(host, port)}: {err}") from None
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port that nothing listens on at `host` right now (on its first address); UIError as `port_is_free`."""
    family, address = _addresses(host, 0)[0]
    try:
        with _probe(family, address) as probe:
            return int(probe.getsockname()[1])
    except OSError as err:
        raise UIError(f"cannot listen on {host}: {err}") from None


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
    raise UIError(f"mlflow server did not answer at {url} within {timeout_s:g} s; its log "
                  f"({log_path}) ends with:\n{_log_tail(log_path)}")


def new_log(port: int) -> Path:
    """A fresh private file (mode 0600, a name no one else has) for the server's log:
    `<temp dir>/nnresearch-ui-<port>-<random>.log`."""
    try:
        handle, path = tempfile.mkstemp(prefix=f"nnresearch-ui-{port}-", suffix=".log")
    except OSError as err:
        raise UIError(f"cannot create the server's log in {tempfile.gettempdir()}: {err}; set TMPDIR "
                      "to a writable folder") from None
    os.close(handle)
    return Path(path)


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
    log = new_log(port) if own_log else Path(log_path)
    url = base_url(host, port)
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
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind, a name or an IPv4 or IPv6 address (default: {DEFAULT_HOST})")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--no-dashboards", action="store_true",
                        help="do not refresh the studies' dashboards (leave the store untouched)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                        help=f"seconds to wait for the server to answer (default: {READY_TIMEOUT_S:.0f})")
    return parser.parse_args(argv)


def _dashboards_or_warn(uri: str, refresh: bool) -> dict[str, str]:
    """The studies' dashboards to link: refreshed (`refresh_dashboards`), or as they are (`--no-dashboards`:
    `existing_dashboards`, nothing written); a warning and none if the store cannot say: the UI is worth
    starting without them."""
    try:
        return dashboards.refresh_dashboards(uri) if refresh else dashboards.existing_dashboards(uri)
    except Exception as err:  # noqa: BLE001 - e.g. a store of an older MLflow; the server will say
        print(f"warning: dashboards not {'refreshed' if refresh else 'listed'} ({type(err).__name__}: {err})",
              file=sys.stderr)
        return {}


def _announce(url: str, prepared: Mapping[str, str]) -> None:
    print(f"MLflow UI: {url}", flush=True)
    for name, experiment_id in prepared.items():
        print(f"  {name}: {url}{dashboards.dashboard_path(experiment_id)}", flush=True)


def _stop(signum: int, frame: object) -> None:
    """A stop signal (SIGINT, even where a shell ignored it; SIGTERM; SIGHUP) -> `Stopped`: stop the
    server. Further stop signals are ignored until the UI exits, so none cuts the server's stop short
    (`stop_server` waits a bounded time, then kills the group)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


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
    """Start the server for a local store, announce it, wait for a stop signal (`Stopped`), stop it;
    1 if the server stops by itself (its log kept)."""
    port = choose_port(args.host, args.port)
    prepared = _dashboards_or_warn(uri, refresh=not args.no_dashboards)
    log = new_log(port)
    url = base_url(args.host, port)
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
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        uri = check_store(args.uri)
        if is_http(uri):
            return _show_server(uri, not args.no_browser)
        return _serve_until_interrupted(uri, args)
    except UIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Stopped, or a Ctrl-C before the handlers were set
        signum = getattr(stop, "signum", signal.SIGINT)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"\nstopped the MLflow UI ({signal.Signals(signum).name})", flush=True)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
