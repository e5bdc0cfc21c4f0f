"""The README as written: its Python example runs, its commands compose and validate, its list of
config groups is the one in conf/, its layout table holds for the imports."""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from nnresearch.config import validate
from nnresearch.paths import CONFIG_DIR

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert float(namespace["J"]) < 0.3  # 200 full-batch steps separate the moons
    assert max(namespace["errors"].values()) < 1e-6


def readme_commands() -> list[list[str]]:
    """The arguments of every `python -m nnresearch.run` command in the README's bash blocks."""
    bash = "\n".join(re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)).replace("\\\n", " ")
    return [args.split("#")[0].split() for line in bash.splitlines()
            for _, found, args in [line.partition("python -m nnresearch.run")] if found]


def job_configs(args: list[str]) -> list[list[str]]:
    """The job overrides a command's arguments stand for: each value of a swept key in turn, the other
    keys at their first value (Hydra's own overrides and flags such as `-m` left out)."""
    parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith(("-", "hydra"))])
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
              for o in parsed]
    firsts = [f"{o.get_key_element()}={v[0]}" for o, v in zip(parsed, values)]
    jobs = [firsts]
    for i, (o, swept) in enumerate(zip(parsed, values)):
        jobs += [firsts[:i] + [f"{o.get_key_element()}={value}"] + firsts[i + 1:] for value in swept[1:]]
    return jobs


def test_the_readme_shows_its_commands():
    assert len(readme_commands()) >= 10, "the README's commands were not found; check readme_commands()"


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_every_readme_command_composes_and_validates(compose, args):
    for overrides in job_configs(args):
        validate(compose(overrides))


def test_readme_lists_every_config_group_and_option():
    paragraph = README.read_text().split("Config groups:")[1].split("`python -m nnresearch.run --help`")[0]
    listed = {group: [option.strip() for option in options.replace("\n", " ").split(",")]
              for group, options in re.findall(r"`(\w+)` \(([^)]*)\)", paragraph)}
    groups = {path.name: sorted(p.stem for p in path.glob("*.yaml")) for path in CONFIG_DIR.iterdir()
              if path.is_dir() and path.name != "hydra"}
    assert sorted(listed) == sorted(groups)
    for group in set(groups) - {"trainer", "experiment"}:  # those two are described in words
        assert sorted(listed[group]) == groups[group], group


def imported_names(path: Path) -> set[str]:
    """Every name `path` imports, anywhere in it (also inside functions), dotted from its top package:
    `a.b` for `import a.b`, `a.b.c` for `from a.b import c`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


PACKAGE = README.parent / "nnresearch"
# The README's layout table, as imports: what the core and the loop may know about beyond the standard library.
FLOORS = {
    "core": (sorted((PACKAGE / "nn").glob("*.py")),
             ("numpy", "array_api_compat", "nnresearch.nn", "nnresearch.backend", "nnresearch.files")),
    "loop": ([PACKAGE / "train.py", PACKAGE / "probes.py", PACKAGE / "sinks.py"],
             ("numpy", "tqdm", "nnresearch.nn", "nnresearch.backend", "nnresearch.probes", "nnresearch.sinks")),
}


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_imports_only_what_the_readme_layout_says_it_knows(floor):
    """The core knows the array namespace (NumPy/CuPy through `backend`) and writes files whole (`files`);
    the loop knows the core and a sink interface, never MLflow, Hydra, OmegaConf or pandas."""
    files, allowed = FLOORS[floor]
    assert files
    strays = {f"{path.name}: {name}" for path in files for name in imported_names(path)
              if name.split(".")[0] not in sys.stdlib_module_names
              and not any(name == known or name.startswith(known + ".") for known in allowed)}
    assert not strays, f"the {floor} imports what the README's layout says it does not know: {sorted(strays)}"


# --------------------------------------------------------------------------------------------
# The README's claims about its own commands, its studies table and its defaults


def setup_block() -> list[str]:
    """The lines of the bash block under "Set up and run (two commands)"."""
    section = README.read_text().split("## Set up and run (two commands)")[1]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip().splitlines()


def test_the_setup_is_two_commands_and_ci_runs_exactly_them():
    """README: "a new user sets up with two commands"; `.ci/run` "runs these two commands": each line of
    the block, as written, is a line of `.ci/run` (a command changed in one place only fails here)."""
    commands = setup_block()
    assert len(commands) == 2, commands
    install, tests = commands
    assert 'pip install ".[test]"' in install and install.endswith("python -m nnresearch.run"), install
    assert tests.endswith("python -m pytest"), tests
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f".ci/run does not run the README's command {command!r}"


def test_the_suite_runs_on_every_core_at_most_4():
    """README: "The second runs the test suite on every core, at most 4 (pytest-xdist; `-n 0` runs it in one process)"."""
    import tomllib

    project = tomllib.loads((README.parent / "pyproject.toml").read_text())
    options = project["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "--numprocesses=auto" in options and "--maxprocesses=4" in options, options
    assert any(dep.startswith("pytest-xdist") for dep in project["project"]["optional-dependencies"]["test"])


def count_runs(db: Path) -> int:
    """Runs in a SQLite store, read without MLflow (which would create a missing store)."""
    import sqlite3

    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_the_default_run_logs_into_mlflow_db_in_the_working_folder(tmp_path, monkeypatch, main_in_process,
                                                                     mlflow_template_db):
    """README command 1: `python -m nnresearch.run`, no tracking.uri and no $MLFLOW_TRACKING_URI, logs to
    `./mlflow.db` and prints the command that opens the UI on it (the store is copied in already migrated)."""
    import shutil

    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, err = main_in_process("trainer.epochs=1", "trainer.progress=false")
    assert code == 0, err
    assert count_runs(tmp_path / "mlflow.db") == 1
    assert f"python -m nnresearch.ui --uri sqlite:///{tmp_path / 'mlflow.db'}" in out, out


def test_tracking_off_logs_nothing_and_writes_no_store(tmp_path, monkeypatch, main_in_process):
    """README: `python -m nnresearch.run tracking=off  # nothing logged, no store written`, neither
    ./mlflow.db nor the store $MLFLOW_TRACKING_URI names: the working folder holds Hydra's outputs/ only."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    code, out, err = main_in_process("tracking=off", "trainer.epochs=1", "trainer.progress=false")
    assert code == 0, err
    assert "(tracking off)" in out, out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["outputs"]


def test_analyses_write_under_reports_by_default(tmp_path, monkeypatch, mlflow_uri, capsys):
    """README: `python -m analysis.<study>` puts its figure in reports/figures/, `python -m analysis.report`
    writes reports/report.md (both relative to the working folder)."""
    from analysis import report
    from analysis.common import STUDIES

    with pytest.raises(SystemExit):
        importlib.import_module(f"analysis.{STUDIES[0]}").main(["--help"])
    assert "(default: reports/figures)" in " ".join(capsys.readouterr().out.split())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert report.main([]).resolve() == tmp_path / "reports" / "report.md"
    assert (tmp_path / "reports" / "report.md").is_file()


STUDIES_REPORT = README.parent / "docs" / "studies-report.md"


def test_the_studies_table_gives_the_times_and_verdicts_of_docs_studies_report():
    """README: the full profile's wall time and the verdict of each study, "both from the run of every full
    profile recorded in docs/studies-report.md", at the code that file names."""
    text, doc = README.read_text(), STUDIES_REPORT.read_text()
    rows = {name: (minutes, verdict) for name, minutes, verdict in
            re.findall(r"^\| `(\w+)` \| §[^|]* \| [^|]* \| ([\d.]+) min \| (held|not held|inconclusive)\b", text, re.M)}
    times = dict(re.findall(r"^\| `(\w+)` \| ([\d.]+) min \(", doc, re.M))
    verdicts = {name: verdict.strip("*") for name, verdict in
                re.findall(r"^\| \[(\w+)\]\(#\w+\) \| ([^|]+?) \|", doc, re.M)}
    assert rows and sorted(rows) == sorted(times) == sorted(verdicts), (sorted(rows), sorted(times), sorted(verdicts))
    assert {name: row[0] for name, row in rows.items()} == times, "the README's full-profile times are not the report's"
    assert {name: row[1] for name, row in rows.items()} == verdicts, "the README's verdicts are not the report's"
    commit = re.search(r"code of the commit that brings this file, ([0-9a-f]{7,})", doc).group(1)
    assert f"[docs/studies-report.md](docs/studies-report.md) (2026-12-07, code of {commit}," in text, \
        f"the README does not name the code the report ran ({commit})"
