"""MLflow's UI on a real sweep, checked in a real browser (headless Chromium driven by Playwright).

The end-to-end test runs a two-job sweep into a temporary store, starts `python -m nnresearch.ui`
on a free port, and checks in Chromium that the experiment, its runs (by name, under their sweep's
parent), a swept param column and the metric charts render; then Ctrl-C stops the UI (exit status
130) and frees the port. Without a browser, the UI is also started and stopped by SIGTERM and SIGHUP. Screenshots go to the test's tmp_path and, when `NNRESEARCH_SCREENSHOTS=<dir>` is set, to
that directory too.

It needs Debian's Chromium at /usr/bin/chromium (`.ci/browser.sh` installs it) and the Python
package `playwright` (the `test` extra), which drives that browser and never downloads one. Where
either is missing it skips, saying which.

`python tests/test_ui.py --uri sqlite:////path/mlflow.db --out docs/images` takes the README's
screenshots of every study in a store (run a study and its analysis into it first; docs/ui.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nnresearch import dashboards, stores, ui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# What a first visit would otherwise show over the runs: the GenAI home, the assistant's panel, a tip.
FIRST_VISIT_DONE = """
localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.detectIssues.guidanceShown_v1', 'true');
"""
VIEWPORT = {"width": 1600, "height": 1000}
UI_TIMEOUT_S = 90
PAGE_TIMEOUT_MS = 30_000
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Without a browser: errors, overrides, the saved view


def test_missing_store_is_named(tmp_path, capsys):
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(ui.UIError, match=str(db)):
        ui.check_store(f"sqlite:///{db}")
    assert ui.main(["--uri", f"sqlite:///{db}", "--no-browser"]) == 2
    assert str(db) in capsys.readouterr().err
    assert not db.parent.exists(), "looking for a store must not create one"


def test_without_options_the_ui_serves_this_folder_s_store_or_mlflow_s_on_port_5000(tmp_path, monkeypatch, capsys):
    """The README's `python -m nnresearch.ui`: ./mlflow.db, or $MLFLOW_TRACKING_URI, on 127.0.0.1:5000."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui.main(["--no-browser"]) == 2  # no store here yet: named, not made
    assert str(tmp_path / "mlflow.db") in capsys.readouterr().err
    elsewhere = tmp_path / "team" / "runs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    assert ui.main(["--no-browser"]) == 2
    assert str(elsewhere) in capsys.readouterr().err and not (tmp_path / "mlflow.db").exists()
    defaults = ui.parse_args([])
    assert (defaults.uri, defaults.host, defaults.port) == (None, "127.0.0.1", 5000)


def test_busy_port_is_named():
    with socket_listening() as port, pytest.raises(ui.UIError, match=f"port {port} on 127.0.0.1 is busy"):
        ui.choose_port("127.0.0.1", port)
    assert ui.choose_port("127.0.0.1", 0) > 0


def test_http_uri_is_only_printed(capsys):
    port = ui.free_port()
    assert ui.main(["--uri", f"http://127.0.0.1:{port}/", "--no-browser"]) == 1  # nothing answers there
    out = capsys.readouterr()
    assert "MLflow UI:" not in out.out and f"nothing answers at http://127.0.0.1:{port}" in out.err


def test_a_uri_no_store_has_is_one_error_line(capsys):
    for uri, words in (("htp://127.0.0.1:5000", "did you mean http://?"), ("nosuch.db", "has no scheme")):
        assert ui.main(["--uri", uri, "--no-browser"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err


def not_stores(folder: Path) -> dict[str, Path]:
    """Files a reader must refuse, and leave as they are: text, an empty file, another program's SQLite database."""
    import sqlite3

    text, empty, foreign = folder / "text.db", folder / "empty.db", folder / "notes.db"
    text.write_text("x\n")
    empty.touch()
    with contextlib.closing(sqlite3.connect(foreign)) as connection, connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    return {"not a SQLite database": text, "an empty file": empty, "a SQLite database without MLflow's tables": foreign}


def test_a_store_to_read_is_checked_without_being_made(tmp_path, mlflow_uri):
    """`stores.check_readable_store`: the resolved URI of a store that exists and is MLflow's, else
    one line naming the path and what it is; nothing is created or written."""
    assert stores.check_readable_store(mlflow_uri) == stores.resolve_uri(mlflow_uri)
    assert stores.check_readable_store("http://127.0.0.1:9/") == "http://127.0.0.1:9"  # a server: not probed
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(stores.UnreadableStoreError, match=f"no MLflow store at {missing} "):
        stores.check_readable_store(f"sqlite:///{missing}")
    with pytest.raises(stores.UnreadableStoreError, match=f"no MLflow file store at {tmp_path / 'mlruns'} "):
        stores.check_readable_store(f"file:{tmp_path / 'mlruns'}")
    with pytest.raises(stores.UnreadableStoreError, match=r"is not an MLflow store \(not a file\)"):
        stores.check_readable_store(f"sqlite:///{tmp_path}")
    for what, path in not_stores(tmp_path).items():
        before = path.read_bytes()
        with pytest.raises(stores.UnreadableStoreError) as refused:
            stores.check_readable_store(f"sqlite:///{path}")
        assert str(refused.value).startswith(f"{path} is not an MLflow store ({what})")
        assert path.read_bytes() == before
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_store_is_refused_in_one_line_before_the_server_starts(tmp_path, monkeypatch, capsys):
    def no_server(*args, **kwargs):
        raise AssertionError("the server was started")

    monkeypatch.setattr(ui, "start_server", no_server)
    for what, path in not_stores(tmp_path).items():
        before = path.read_bytes()
        assert ui.main(["--uri", f"sqlite:///{path}", "--port", "0", "--no-browser"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{path} is not an MLflow store ({what})" in err, err
        assert path.read_bytes() == before, "reading a store must not make one"


def test_an_unusable_host_is_one_error_line(mlflow_uri, capsys):
    """An unknown name, or an address of another machine (TEST-NET-1), with any port or port 0."""
    for host in ("bad.invalid", "192.0.2.1"):
        for port in ("0", str(ui.free_port())):
            assert ui.main(["--uri", mlflow_uri, "--host", host, "--port", port, "--no-browser", "--no-dashboards"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(f"error: cannot listen on {host}"), err


def test_an_ipv6_host_gets_a_port_and_a_url_in_brackets():
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here ({err})")
    port = ui.choose_port("::1", 0)
    assert ui.port_is_free("::1", port) and ui.base_url("::1", port) == f"http://[::1]:{port}"
    with socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", 0))
        server.listen()
        busy = server.getsockname()[1]
        with pytest.raises(ui.UIError, match=f"port {busy} on ::1 is busy"):
            ui.choose_port("::1", busy)


def test_the_server_log_is_a_private_file_of_its_own(tmp_path, mlflow_uri, monkeypatch, capsys):
    """Not the fixed /tmp/nnresearch-ui-<port>.log that another user's file could hold: that file is
    left alone, and a server that fails keeps its own log, named in the error."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = ui.free_port()
    theirs = tmp_path / f"nnresearch-ui-{port}.log"
    theirs.write_text("someone else's log\n")

    def failing_server(uri, host, port, log_path):
        log_path.write_text("the server's last words\n")
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(ui, "start_server", failing_server)
    assert ui.main(["--uri", mlflow_uri, "--port", str(port), "--no-browser", "--no-dashboards"]) == 2
    err = capsys.readouterr().err
    assert theirs.read_text() == "someone else's log\n"
    logs = [path for path in tmp_path.glob("nnresearch-ui-*.log") if path != theirs]
    assert len(logs) == 1 and f"its log ({logs[0]})" in err and "the server's last words" in err, err
    assert logs[0].stat().st_mode & 0o077 == 0, "the log is readable by its owner only"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_a_closed_terminal_stop_the_ui_and_its_server(signum, tmp_path, mlflow_uri):
    """`kill` (SIGTERM) and closing the terminal (SIGHUP) stop the server's whole process group with
    the UI, remove its log, and exit 128 + the signal's number (143, 129), as Ctrl-C exits 130."""
    temp = tmp_path / "temp"
    temp.mkdir()
    server = UIProcess(mlflow_uri, tmp_path, "--no-dashboards", env={"TMPDIR": str(temp)})
    group = None
    try:
        log = Path(server.wait_for("server log:").split(": ", 1)[1])
        assert log.parent == temp and log.is_file()
        group = server.server_group()
        code = server.interrupt(signum)
        alive = group_ends(group)
    finally:
        server.kill()
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # only what this test started, if the UI left it
    assert not alive, f"the server's processes {alive} outlived the UI"
    assert code == 128 + signum, "\n".join(server.seen)
    assert not list(temp.iterdir()), "a clean stop leaves no log behind"


def a_study_job(uri: str, experiment: str = "vanishing_gradients") -> str:
    """One job of this project's (a config hash) under a sweep's parent run, as a refresh finds it; the parent's id."""
    from nnresearch import tracking

    parent = tracking.open_parent_run(uri, experiment, "sweep1", f"{experiment}-sweep-1")
    with tracking.open_run(uri, experiment, "mlp-relu-d1", parent_run_id=parent,
                           tags={tracking.CONFIG_HASH_TAG: "0123"}) as sink:
        sink.log_params({"model": {"depth": 1}})
        sink.log_metrics({"train/loss": 1.0}, step=0)
    return parent


def test_no_dashboards_leaves_the_store_untouched(tmp_path, mlflow_uri):
    """`--no-dashboards`: the store's file is byte for byte the same after the UI started on it and
    stopped, though it holds a study whose dashboard a refresh would write (checked on a copy)."""
    a_study_job(mlflow_uri)
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    before, beside = db.read_bytes(), sorted(path.name for path in db.parent.glob(db.name + "*"))
    copy = tmp_path / "copy" / "mlflow.db"
    copy.parent.mkdir()
    copy.write_bytes(before)
    assert dashboards.refresh_dashboards(f"sqlite:///{copy}") and copy.read_bytes() != before, \
        "the store must hold something a refresh writes, or the test proves nothing"
    temp = tmp_path / "temp"
    temp.mkdir()
    server = UIProcess(mlflow_uri, tmp_path, "--no-dashboards", env={"TMPDIR": str(temp)})
    try:
        server.wait_for("server log:")
        code = server.interrupt()
    finally:
        server.kill()
    assert code == 128 + signal.SIGINT, "\n".join(server.seen)
    assert db.read_bytes() == before, "--no-dashboards must leave the store untouched"
    assert sorted(path.name for path in db.parent.glob(db.name + "*")) == beside, "no journal or WAL left beside it"


def test_no_dashboards_still_links_the_dashboards_already_there(mlflow_uri):
    """`--no-dashboards` writes nothing, yet lists the studies whose dashboards exist (made by their sweeps
    or an earlier refresh), as the UI prints them; a study without one is not listed."""
    a_study_job(mlflow_uri)
    a_study_job(mlflow_uri, "initialization")
    experiment_id = dashboards.refresh_dashboard(mlflow_uri, "vanishing_gradients")
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    before = db.read_bytes()
    assert ui._dashboards_or_warn(mlflow_uri, refresh=False) == {"vanishing_gradients": experiment_id}
    assert db.read_bytes() == before


def never_answering_server(log_path: Path) -> subprocess.Popen[bytes]:
    """A process that neither answers nor exits, in its own process group as `ui.start_server` starts one."""
    log_path.write_text("loading the store\nstill loading\n")
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)


def test_timeout_is_how_long_the_ui_waits_for_the_server(tmp_path, mlflow_uri, monkeypatch, capsys):
    """`--timeout S`: a server that has not answered within S seconds (a clock of the test's, no real
    wait) is stopped, and the UI exits 2 with one error line naming the kept log, then its last lines."""
    from types import SimpleNamespace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    clock = [0.0]
    monkeypatch.setattr(ui, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                    sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds)))
    monkeypatch.setattr(ui, "answers", lambda url, timeout_s=2.0: False)
    started = []
    monkeypatch.setattr(ui, "start_server", lambda uri, host, port, log_path:
                        started.append(never_answering_server(log_path)) or started[-1])
    try:
        code = ui.main(["--uri", mlflow_uri, "--port", "0", "--no-browser", "--no-dashboards", "--timeout", "3"])
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
                raise AssertionError("the UI left the server that never answered running")
    out, err = capsys.readouterr()
    assert code == 2, err
    assert 3 <= clock[0] < 3 + ui.POLL_S, f"waited {clock[0]} s of the test's clock, not --timeout's 3"
    url = out.split("starting MLflow's UI at ", 1)[1].split()[0]
    logs = list(tmp_path.glob("nnresearch-ui-*.log"))
    assert len(logs) == 1, "the log of a server that never answered is kept"
    assert err.splitlines() == [f"error: mlflow server did not answer at {url} within 3 s; its log ({logs[0]}) "
                                "ends with:", "loading the store", "still loading"], err


def popen_recorded(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    """Make `mlflow server` a process that exits at once (code 3); the (command, environment) of each start."""
    started = []
    real_popen = subprocess.Popen

    def popen(command, **kwargs):
        started.append((list(command), dict(kwargs["env"])))
        return real_popen([sys.executable, "-c", "raise SystemExit(3)"], stdin=subprocess.DEVNULL,
                          start_new_session=True)

    monkeypatch.setattr(ui.subprocess, "Popen", popen)
    return started


def test_host_is_the_address_the_server_binds(tmp_path, mlflow_uri, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started = popen_recorded(monkeypatch)
    assert ui.main(["--uri", mlflow_uri, "--host", "localhost", "--port", "0", "--no-browser", "--no-dashboards"]) == 2
    assert "mlflow server exited with code 3" in capsys.readouterr().err
    [(command, _)] = started
    assert command[command.index("--host") + 1] == "localhost", command
    assert ui.server_command(mlflow_uri, "::1", 5001)[-6:] == ["--host", "::1", "--port", "5001", "--workers", "1"]


def test_the_server_runs_without_job_runner_and_telemetry_unless_the_user_sets_them(tmp_path, mlflow_uri,
                                                                                     monkeypatch, capsys):
    """MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false and MLFLOW_DISABLE_TELEMETRY=true, unless already set."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started = popen_recorded(monkeypatch)
    argv = ["--uri", mlflow_uri, "--port", "0", "--no-browser", "--no-dashboards"]
    switches = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": ("false", "true"), "MLFLOW_DISABLE_TELEMETRY": ("true", "false")}
    for name in switches:
        monkeypatch.delenv(name, raising=False)
    assert ui.main(argv) == 2
    for name, (ours, theirs) in switches.items():
        monkeypatch.setenv(name, theirs)
    assert ui.main(argv) == 2
    capsys.readouterr()
    (_, default_env), (_, user_env) = started
    assert {name: default_env.get(name) for name in switches} == {name: ours for name, (ours, _) in switches.items()}
    assert {name: user_env.get(name) for name in switches} == {name: theirs for name, (_, theirs) in switches.items()}


@contextmanager
def health_server() -> Iterator[str]:
    """A tiny HTTP server on a free port answering `GET /health` with 200 `OK`, as MLflow's does; its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"OK" if self.path == "/health" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def test_an_http_uri_that_answers_already_is_the_ui(monkeypatch, capsys):
    """`--uri http://...` of a running tracking server: printed as the UI (and opened in a browser
    unless --no-browser), exit status 0, no server started."""
    def no_server(*args, **kwargs):
        raise AssertionError("a server was started for a tracking server's URI")

    monkeypatch.setattr(ui, "start_server", no_server)
    opened = []
    monkeypatch.setattr(ui.webbrowser, "open", opened.append)
    with health_server() as url:
        assert ui.main(["--uri", url, "--no-browser"]) == 0
        out = capsys.readouterr()
        assert (out.out, out.err) == (f"MLflow UI: {url} (a tracking server already is the UI)\n", "")
        assert opened == []
        assert ui.main(["--uri", url + "/"]) == 0
        assert opened == [url]


def test_a_description_cleared_in_the_ui_is_written_again(mlflow_uri):
    """Clearing it (MLflow's editor saves an empty text; blanks alike) gives the generated one back."""
    from mlflow import MlflowClient

    a_study_job(mlflow_uri)
    experiment_id = dashboards.refresh_dashboards(mlflow_uri)["vanishing_gradients"]
    client = MlflowClient(mlflow_uri)
    generated = client.get_experiment(experiment_id).tags[dashboards.DESCRIPTION_TAG]
    for cleared in ("", " \n "):
        client.set_experiment_tag(experiment_id, dashboards.DESCRIPTION_TAG, cleared)
        dashboards.refresh_dashboards(mlflow_uri)
        assert client.get_experiment(experiment_id).tags[dashboards.DESCRIPTION_TAG] == generated


def test_an_experiment_kind_already_set_is_kept(mlflow_uri):
    """`mlflow.experimentKind` is set only if absent: a refresh keeps one the UI (or a person) chose."""
    from mlflow import MlflowClient

    a_study_job(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    experiment_id = client.get_experiment_by_name("vanishing_gradients").experiment_id
    client.set_experiment_tag(experiment_id, dashboards.EXPERIMENT_KIND_TAG, "genai_development")
    assert dashboards.refresh_dashboards(mlflow_uri) == {"vanishing_gradients": experiment_id}
    tags = client.get_experiment(experiment_id).tags
    assert dashboards.VIEW_TAG in tags, "the refresh ran"
    assert tags[dashboards.EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_view_saved_over_in_the_ui_is_kept_and_a_deleted_one_written_again(mlflow_uri):
    """The UI saves a view without `writtenBy`: a refresh leaves it; with the tag deleted, the next
    refresh writes the generated view again."""
    import json

    from mlflow import MlflowClient

    a_study_job(mlflow_uri)
    experiment_id = dashboards.refresh_dashboards(mlflow_uri)["vanishing_gradients"]
    client = MlflowClient(mlflow_uri)
    generated = json.loads(client.get_experiment(experiment_id).tags[dashboards.VIEW_TAG])
    assert generated["writtenBy"] == dashboards.WRITER
    state = dashboards.decode_state(generated["state"]) | {"selectedColumns": ["metrics.`train/loss`"], "groupBy": None}
    theirs = json.dumps({"name": "mine", "createdAt": generated["createdAt"], "updatedAt": generated["updatedAt"] + 1,
                         "state": json.dumps(state)})
    client.set_experiment_tag(experiment_id, dashboards.VIEW_TAG, theirs)  # "Save" over the view in the UI
    dashboards.refresh_dashboards(mlflow_uri)
    assert client.get_experiment(experiment_id).tags[dashboards.VIEW_TAG] == theirs, "a view saved in the UI is theirs"

    client.delete_experiment_tag(experiment_id, dashboards.VIEW_TAG)
    dashboards.refresh_dashboards(mlflow_uri)
    again = json.loads(client.get_experiment(experiment_id).tags[dashboards.VIEW_TAG])
    assert again["writtenBy"] == dashboards.WRITER
    assert dashboards.decode_state(again["state"]) == dashboards.decode_state(generated["state"])


def test_the_screenshot_command_refuses_a_missing_store(tmp_path, monkeypatch):
    monkeypatch.delenv("NNRESEARCH_SCREENSHOTS", raising=False)  # restored after: the command sets it
    db = tmp_path / "nowhere.db"
    with pytest.raises(ui.UIError, match=f"no MLflow store at {db}"):
        study_screenshots(f"sqlite:///{db}", tmp_path / "images")
    assert not db.exists(), "taking screenshots must not create a store"
    with pytest.raises(stores.UnreadableStoreError, match=f"no MLflow store at {db}"):
        dashboards.refresh_dashboards(f"sqlite:///{db}")
    assert not db.exists()


def test_swept_params_from_overrides():
    overrides = ["model.activation=relu", "model.depth=2", "trainer.seed=0", "experiment=vanishing_gradients",
                 "profile=quick", "tracking.uri=sqlite\\:////tmp/x.db", "trainer.progress=false", "+data.noise=0.1"]
    assert dashboards.swept_params_from_overrides(overrides) == ["model.activation", "model.depth", "trainer.seed",
                                                         "data.noise"]


def test_dashboard_state_groups_seeds_and_charts_layers():
    state = dashboards.dashboard_state(["model.activation", "model.depth", "trainer.seed"], dashboards.DEFAULT_METRICS,
                               parent_run_id="abc123", objective="val/acc",
                               known_metrics=["grad_norm/layer10", "grad_norm/layer2", "grad_norm/layer1", "act_std/layer1"])
    assert state["searchFilter"] == "tags.`mlflow.parentRunId` = 'abc123'"
    assert [key["groupByData"] for key in state["groupBy"]["groupByKeys"]] == ["model.activation", "model.depth"]
    assert state["selectedColumns"][:4] == ["params.`model.activation`", "params.`model.depth`",
                                            "params.`trainer.seed`", "metrics.`val/acc`"]
    charts = {tuple(chart.get("selectedMetricKeys", [chart["metricKey"]])): chart for chart in state["compareRunCharts"]}
    assert ("train/loss", "val/loss") in charts and ("train/acc", "val/acc") in charts
    assert charts[("val/acc",)]["type"] == "BAR"
    layers = [keys[0] for keys in charts if keys[0].startswith("grad_norm/")]
    assert layers == ["grad_norm/layer1", "grad_norm/layer2", "grad_norm/layer10"]
    assert charts[("grad_norm/layer1",)]["scaleType"] == "log"
    sections = {section["uuid"]: section for section in state["compareRunSections"]}
    assert all(chart["metricSectionId"] in sections for chart in state["compareRunCharts"])
    assert [s["name"] for s in state["compareRunSections"] if s["display"]] == ["Learning curves", "grad_norm"]
    assert dashboards.decode_state(dashboards.encode_state(state)) == state
    big = state | {"padding": "x" * dashboards.COMPRESS_ABOVE_CHARS}
    assert dashboards.encode_state(big).startswith("deflate;") and dashboards.decode_state(dashboards.encode_state(big)) == big


def test_prepare_dashboard_sets_tags_once(mlflow_uri):
    from mlflow import MlflowClient

    from nnresearch import tracking

    parent = tracking.open_parent_run(mlflow_uri, "vanishing_gradients", "sweep1", "vanishing_gradients-sweep-1")
    with tracking.open_run(mlflow_uri, "vanishing_gradients", "mlp-relu-d1", parent_run_id=parent,
                           tags={tracking.CONFIG_HASH_TAG: "0123"}) as sink:
        sink.log_params({"model": {"depth": 1}, "objective": "val/acc"})
        sink.log_metrics({"train/loss": 1.0, "grad_norm/layer1": 0.1, "grad_norm/layer2": 0.2}, step=0)
    experiment_id = dashboards.prepare_dashboard(mlflow_uri, "vanishing_gradients", ["model.depth"], parent_run_id=parent,
                                         objective="val/acc", study="vanishing_gradients")
    client = MlflowClient(mlflow_uri)
    tags = client.get_experiment(experiment_id).tags
    assert tags[dashboards.EXPERIMENT_KIND_TAG] == "custom_model_development"
    description = tags[dashboards.DESCRIPTION_TAG]
    assert "sigmoid" in description and "python -m analysis.vanishing_gradients" in description
    assert dashboards.dashboard_path(experiment_id).lstrip("/") in description and parent in description
    dashboards.prepare_dashboard(mlflow_uri, "vanishing_gradients", ["model.depth"], parent_run_id=parent,
                         objective="val/acc", study="vanishing_gradients")
    assert client.get_experiment(experiment_id).tags == tags, "an unchanged dashboard is not rewritten"
    with tracking.open_run(mlflow_uri, "someone-elses", "their-run"):
        pass
    assert dashboards.refresh_dashboards(mlflow_uri) == {"vanishing_gradients": experiment_id}  # not someone-elses
    assert dashboards.DESCRIPTION_TAG not in client.get_experiment_by_name("someone-elses").tags

    client.set_experiment_tag(experiment_id, dashboards.DESCRIPTION_TAG, "My own notes.")  # edited in the UI
    dashboards.prepare_dashboard(mlflow_uri, "vanishing_gradients", ["model.depth", "optim.lr"], parent_run_id=parent)
    tags = client.get_experiment(experiment_id).tags
    assert tags[dashboards.DESCRIPTION_TAG] == "My own notes.", "a person's description is theirs"
    assert "optim.lr" in tags[dashboards.VIEW_TAG], "the view, still ours, follows the new sweep"


def test_description_links_the_latest_verdict_and_figure_once_the_analysis_logged_them(mlflow_uri):
    from mlflow import MlflowClient

    from nnresearch import tracking

    parent_id = tracking.open_parent_run(mlflow_uri, "vanishing_gradients", "sweep1", "vanishing_gradients-sweep-1")
    client = MlflowClient(mlflow_uri)
    commands = ["python -m nnresearch.run -m experiment=vanishing_gradients", "python -m analysis.vanishing_gradients"]

    def description(figure: str | None = None) -> str:
        parent = client.get_run(parent_id)
        return dashboards.description_markdown("vanishing_gradients", parent.info.experiment_id, claim="Gradients vanish.",
                                               commands=commands, swept_params=["model.depth"], parent=parent,
                                               figure=figure)

    before = description()
    assert "verdict" in before and "once the analysis has run" in before and "**held**" not in before
    client.set_tag(parent_id, "verdict", "not held")
    after = description("figures/vanishing_gradients.png")
    page = f"#/experiments/{client.get_run(parent_id).info.experiment_id}/runs/{parent_id}"
    assert f"verdict **not held** ([verdict.json]({page}/artifacts/verdict.json))" in after
    assert f"[figure]({page}/artifacts/figures/vanishing_gradients.png)" in after
    assert f"run_uuid={parent_id}" in after and "once the analysis has run" not in after


def test_the_description_s_commands_name_the_store_and_experiment_unless_default(mlflow_uri, tmp_path, monkeypatch):
    """Pasted from the UI, a study's commands run into and read from the store it shows."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    commands = ["python -m nnresearch.run -m experiment=mitigations", "python -m analysis.mitigations"]
    assert dashboards.commands_for_store(commands, None, "mitigations", "mitigations") == commands
    assert dashboards.commands_for_store(commands, mlflow_uri, "mine", "mitigations") == [
        f"python -m nnresearch.run -m experiment=mitigations tracking.uri={mlflow_uri} tracking.experiment=mine",
        f"python -m analysis.mitigations --uri {mlflow_uri} --experiment mine"]
    from mlflow import MlflowClient

    from nnresearch import tracking

    parent = tracking.open_parent_run(mlflow_uri, "mitigations", "sweep1", "mitigations-sweep-1")
    dashboards.prepare_dashboard(mlflow_uri, "mitigations", ["model.depth"], parent_run_id=parent)
    description = MlflowClient(mlflow_uri).get_experiment_by_name("mitigations").tags[dashboards.DESCRIPTION_TAG]
    assert f"python -m analysis.mitigations --uri {mlflow_uri}\n" in description, description


def test_sweep_dashboard_never_fails_a_job_and_the_next_job_tries_again(mlflow_uri, capsys):
    for _ in range(2):
        assert dashboards.prepare_sweep_dashboard(mlflow_uri, "no-such-study", ["model.depth=2"], "0" * 32,
                                                  job_metrics=["train/loss"]) is None
        assert "no MLflow dashboard for 'no-such-study'" in capsys.readouterr().err


def test_a_sweep_prepares_its_dashboard_again_only_for_metric_names_it_has_not_shown(mlflow_uri, monkeypatch):
    prepared = []
    monkeypatch.setattr(dashboards, "prepare_dashboard", lambda *args, **kwargs: prepared.append(args) or "7")
    monkeypatch.setattr(dashboards, "_sweep_metrics_shown", {})
    job = (mlflow_uri, "vanishing_gradients", ["model.depth=2"], "f" * 32)
    assert dashboards.prepare_sweep_dashboard(*job, job_metrics=["train/loss", "grad_norm/layer1"]) == "7"
    assert dashboards.prepare_sweep_dashboard(*job, job_metrics=["grad_norm/layer1"]) is None  # nothing new
    assert dashboards.prepare_sweep_dashboard(*job, job_metrics=["grad_norm/layer2"]) == "7"  # a deeper model
    assert dashboards.prepare_sweep_dashboard(*job[:3], "e" * 32, job_metrics=["train/loss"]) == "7"  # another sweep
    assert len(prepared) == 3


# --------------------------------------------------------------------------------------------
# In a browser


def browser_or_skip() -> None:
    """Skip, saying what is missing, unless Debian's Chromium and the playwright package are both here."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"no Chromium at {CHROMIUM} (install it: bash .ci/browser.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed (pip install '.[test]')")
    if missing:
        pytest.skip("browser test needs a browser: " + "; ".join(missing))


@contextmanager
def socket_listening() -> Iterator[int]:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@contextmanager
def chromium_page() -> Iterator[object]:
    """A fresh headless Chromium page (Debian's browser, no download), past the first-visit tips."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.add_init_script(FIRST_VISIT_DONE)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def visit(page, url: str) -> None:
    """Load `url` afresh: going to another `#/...` route of the same app would keep its state."""
    page.goto("about:blank")
    page.goto(url)


def screenshot(page, name: str, tmp_path: Path | None) -> None:
    """Save `<name>.png` to tmp_path and to $NNRESEARCH_SCREENSHOTS when that is set."""
    targets = [tmp_path] if tmp_path else []
    if os.environ.get("NNRESEARCH_SCREENSHOTS"):
        targets.append(Path(os.environ["NNRESEARCH_SCREENSHOTS"]))
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"))


class UIProcess:
    """`python -m nnresearch.ui` as a subprocess, its stdout read line by line in a thread."""

    def __init__(self, uri: str, cwd: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nnresearch.ui", "--uri", uri, "--port", "0", "--no-browser", *options],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float = UI_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if line.strip().startswith(prefix):
                return line.strip()
        raise AssertionError(f"nnresearch.ui printed no line starting {prefix!r}:\n" + "\n".join(self.seen))

    def interrupt(self, signum: int = signal.SIGINT) -> int:
        """Ctrl-C, as a terminal sends it (or another signal: `kill`'s SIGTERM, a closed terminal's
        SIGHUP); the exit code."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)

    def server_group(self) -> int:
        """The process group of the UI's `mlflow server` (its child, leader of its own session)."""
        children = [pid for pid, ppid, _ in live_processes() if ppid == self.process.pid]
        assert len(children) == 1, f"the UI should have one child, its mlflow server: {children}"
        return children[0]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process that is not a zombie (Linux /proc)."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs Linux's /proc to find the server's processes")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                state, ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            except (OSError, ValueError):
                continue
            if state != "Z":
                found.append((int(entry.name), int(ppid), int(pgrp)))
    return found


def group_ends(pgid: int, timeout_s: float = 10.0) -> list[int]:
    """Wait (at most `timeout_s`) for process group `pgid` to end; the pids of it still alive."""
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid, _, group in live_processes() if group == pgid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def check_runs_listed(page, names: list[str]) -> None:
    for name in names:
        page.get_by_role("link", name=name).first.wait_for()


def plotted_lines(card) -> int:
    """How many plotted data lines a chart card holds (plotly draws each as `path.js-line`; a flat
    line has no height, which Playwright counts as hidden, so it waits for the path to exist)."""
    card.locator("path.js-line").first.wait_for(state="attached")
    return card.locator("path.js-line").count()


@pytest.mark.slow
def test_sweep_opens_as_a_dashboard_in_chromium(tmp_path):
    browser_or_skip()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = subprocess.run(
        [sys.executable, "-m", "nnresearch.run", "-m", "model.depth=1,2", "trainer.epochs=2", "trainer.progress=false",
         f"tracking.uri={uri}"], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=120)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    jobs = ["mlp-relu-d1-w64-he-s0", "mlp-relu-d2-w64-he-s0"]

    server = UIProcess(uri, tmp_path)
    try:
        base = server.wait_for("MLflow UI:").split()[-1]
        dashboard = server.wait_for("default:").split()[-1]
        assert dashboard.startswith(base + "/#/experiments/") and "viewStateShareKey=nnresearch" in dashboard
        with chromium_page() as page:
            # The experiment list, then the experiment: its jobs nest under the sweep's parent run.
            page.goto(f"{base}/#/experiments?workflowType=machine_learning")
            page.get_by_role("link", name="default", exact=True).first.click()
            parent = page.get_by_role("link", name="default-sweep-", exact=False).first
            parent.wait_for()
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # expand it
            check_runs_listed(page, jobs)
            screenshot(page, "ui-runs", tmp_path)

            # The saved view as a table: jobs grouped by the swept param, which is a column.
            page.goto(dashboard.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"))
            check_runs_listed(page, jobs)
            page.get_by_text("model.depth", exact=True).first.wait_for()
            assert page.get_by_text("Group by: model.depth").count() == 1
            screenshot(page, "ui-dashboard-table", tmp_path)

            # The saved view as charts: loss curves with a line per job, gradient norms per layer.
            page.goto(dashboard)
            loss = page.locator('[data-testid="experiment-view-compare-runs-card"]',
                                has_text="train/loss vs val/loss").first
            assert plotted_lines(loss) >= 2 * len(jobs)  # train and val, per job
            layer1 = page.locator('[data-testid="experiment-view-compare-runs-card"]', has_text="grad_norm/layer1").first
            assert plotted_lines(layer1) >= len(jobs)
            screenshot(page, "ui-dashboard-charts", tmp_path)
    finally:
        code = server.interrupt() if server.process.poll() is None else server.process.returncode
        server.kill()
    assert code == 128 + signal.SIGINT, "\n".join(server.seen)  # 130, as a shell reports Ctrl-C
    port = int(base.rsplit(":", 1)[1])
    assert ui.port_is_free("127.0.0.1", port), "Ctrl-C must stop the server with the UI"


@pytest.mark.slow
def test_the_screenshot_command_takes_a_study_whose_curves_are_flat(tmp_path, mlflow_uri, monkeypatch):
    """A dead net's curves are flat lines, which have no height: Playwright counts them as hidden,
    so the screenshot command must not wait for them to be visible."""
    browser_or_skip()
    from nnresearch import tracking

    monkeypatch.delenv("NNRESEARCH_SCREENSHOTS", raising=False)  # restored after: the command sets it
    parent = tracking.open_parent_run(mlflow_uri, "flat", "sweep1", "flat-sweep-1")
    for depth in (1, 2):
        with tracking.open_run(mlflow_uri, "flat", f"mlp-relu-d{depth}", parent_run_id=parent,
                               tags={tracking.CONFIG_HASH_TAG: f"hash{depth}"}) as sink:
            sink.log_params({"model": {"depth": depth}})
            for step in range(3):
                sink.log_metrics({"train/loss": 1.0986, "val/loss": 1.0986, "grad_norm/layer1": 0.0}, step=step)
    shots = study_screenshots(mlflow_uri, tmp_path / "images")
    assert [path.name for path in shots] == ["ui-flat-dashboard.png", "ui-flat-description.png"]


# --------------------------------------------------------------------------------------------
# The README's screenshots (not a test): python tests/test_ui.py --uri ... --out docs/images


def study_screenshots(uri: str, out: Path) -> list[Path]:
    """For each study in the store: its dashboard, its description (claim, verdict, figure) and
    the figure among its sweep parent's artifacts, as `out/ui-<study>-*.png`. UIError for a store
    that is missing or not MLflow's (never made one)."""
    uri = ui.check_store(uri)
    os.environ["NNRESEARCH_SCREENSHOTS"] = str(out)
    from mlflow import MlflowClient

    prepared = dashboards.refresh_dashboards(uri)
    client = MlflowClient(uri)
    with ui.serve(uri) as base, chromium_page() as page:
        for name, experiment_id in prepared.items():
            visit(page, base + dashboards.dashboard_path(experiment_id))
            # A line plotted, if only a flat one (a dead net's loss): attached, as it has no height to be visible.
            charts = page.locator('[data-testid="experiment-view-compare-runs-card"]')
            charts.first.locator("path.js-line").first.wait_for(state="attached")
            page.locator('[data-component-id="mlflow.experiment_page.shared_view.dismiss"]').click()
            page.mouse.click(80, VIEWPORT["height"] - 300)  # on the sidebar's blank: no button keeps the focus ring
            time.sleep(2)  # let every chart in view draw
            screenshot(page, f"ui-{name}-dashboard", None)

            parent = dashboards.latest_parent(client, experiment_id)
            visit(page, f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
            page.get_by_text("matching runs").wait_for()  # the runs table, before the description takes its room
            page.locator('[data-component-id="mlflow.experiment.metadata_editor.expand_button"]').click()
            if "![" in client.get_experiment(experiment_id).tags.get(dashboards.DESCRIPTION_TAG, ""):
                page.locator('img[src*="get-artifact"]').first.wait_for()
            time.sleep(1)
            screenshot(page, f"ui-{name}-description", None)

            figures = [item.path for item in client.list_artifacts(parent.info.run_id, "figures")] if parent else []
            if figures:
                visit(page, f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts/{figures[0]}")
                page.locator('img[src^="blob:"]').first.wait_for()  # the artifact viewer's copy
                time.sleep(1)
                screenshot(page, f"ui-{name}-figure", None)
    return sorted(out.glob("ui-*.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Screenshot every study's MLflow dashboard.")
    parser.add_argument("--uri", required=True, help="the store, e.g. sqlite:////tmp/study/mlflow.db")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    arguments = parser.parse_args()
    try:
        for path in study_screenshots(arguments.uri, arguments.out):
            print(path)
    except ui.UIError as error:  # one line, as python -m nnresearch.ui says it
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
