"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert float(namespace["J"]) < 0.3  # 200 full-batch steps separate the moons
    assert max(namespace["errors"].values()) < 1e-6


def test_readme_gives_the_two_setup_commands():
    text = README.read_text()
    assert 'pip install ".[test]" && python -m nnresearch.run' in text
    assert "python -m pytest" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install ".[test]" && python -m nnresearch.run' in ci and "python -m pytest" in ci
