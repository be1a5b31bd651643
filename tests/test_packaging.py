"""Packaging and command-line conventions: one version, every package in the wheel, the pipelines
and jobs under spray's own name, `spray init`, `--version`, `python -m spray`, log levels, log lines
that keep clear of progress bars and no bars off a terminal. The slow test builds the wheel and
installs it into a fresh venv (torch first), then runs `spray --version`, `spray init` and the demo
there (`make wheel-check`)."""
import io
import logging
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import spray
from spray import console
from spray.cli import EXIT_CONFIG, EXIT_OK, main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed_and_the_repo_folders_install_under_sprays_name():
    tool = PYPROJECT["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "spray").rglob("__init__.py")}
    assert found | {"spray.pipelines", "spray.configs"} == set(tool["packages"]), "update [tool.setuptools] packages"
    assert tool["package-dir"]["spray.pipelines"] == "pipelines" and tool["package-dir"]["spray.configs"] == "configs"
    assert not any(p == "pipelines" or p.startswith("pipelines.") for p in tool["packages"])
    assert "*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["spray.configs"]


def test_one_version_and_a_license():
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "spray.__version__"}
    from importlib.metadata import version
    assert version("spray") == spray.__version__
    assert project["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()


def test_version_help_and_python_m(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"spray {spray.__version__}"
    out = subprocess.run([sys.executable, "-m", "spray", "--version"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == f"spray {spray.__version__}"
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "exit codes:" in text and "2  bad configuration" in text and "-v, --verbose" in text


def test_init_writes_the_shipped_jobs(tmp_path, capsys):
    target = tmp_path / "job.yaml"
    assert main(["init", str(target)]) == EXIT_OK
    assert target.read_text() == (ROOT / "configs" / "template.yaml").read_text()
    assert "spray run" in capsys.readouterr().out
    assert main(["init", str(target)]) == EXIT_CONFIG
    assert "--force" in capsys.readouterr().err
    assert main(["init", str(target), "--example", "demo", "--force"]) == EXIT_OK
    assert target.read_text() == (ROOT / "configs" / "demo.yaml").read_text()
    assert main(["init", str(tmp_path)]) == EXIT_OK and (tmp_path / "spray-job.yaml").is_file()
    assert main(["init", "--example", "nope", str(tmp_path / "x.yaml")]) == EXIT_CONFIG
    assert main(["init", "--list"]) == EXIT_OK
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("template", "demo", "bed-watermark", "bed-background", "cluster-example"))


def test_verbosity_maps_to_log_levels(tmp_path):
    for argv, expected in ((["init"], logging.INFO), (["-q", "init"], logging.WARNING), (["init", "-qq"], logging.ERROR),
                           (["-v", "init"], logging.DEBUG), (["init", "-vv"], logging.DEBUG)):
        assert main(argv + [str(tmp_path / "j.yaml"), "--force"]) == EXIT_OK
        assert logging.getLogger("spray").level == expected, argv
    main(["init", str(tmp_path / "j.yaml"), "--force"])
    assert logging.getLogger("distributed").level == logging.ERROR


def test_log_lines_keep_clear_of_the_bar_and_no_bars_off_a_terminal():
    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    console.setup(0, stream)
    with tqdm(total=10, file=stream, desc="explain", mininterval=0) as bar:
        for i in range(10):
            bar.update(1)
            if i == 4:
                logging.getLogger("spray.test").info("halfway there")
    text = stream.getvalue()
    line = re.search(r"[\r\n]\d\d:\d\d:\d\d spray\.test: halfway there\n", text)
    assert line, repr(text)                                                     # a line of its own
    assert "explain" in text[line.end():]                                       # the bar is redrawn below
    assert console.bars_enabled(0, stream) and not console.bars_enabled(-1, stream)
    assert not console.bars_enabled(0, io.StringIO())                            # a log file or a pipe
    console.setup(0)


def test_a_terminal_without_a_width_gets_one(monkeypatch):
    """tqdm trims bars to the reported width: a pty nobody sized (0 columns) showed no bar at all."""
    import fcntl
    import pty
    import struct
    import termios
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        with open(slave, "w", closefd=False) as stream:
            assert console.give_width(stream) == 100
            assert struct.unpack("hh", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8)[:4])[1] == 100
            assert console.give_width(stream) is None                          # a sized terminal is left alone
    finally:
        os.close(master)
        os.close(slave)
    assert console.give_width(io.StringIO()) is None


def test_activity_reports_a_long_silent_step(caplog):
    import time
    caplog.set_level(logging.INFO, logger="spray")
    with console.activity("training", progress=False, delay=0.05, every=0.1):
        time.sleep(0.35)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "training ..." and any("still running after" in m for m in messages)
    assert messages[-1].startswith("training: done in")
    caplog.clear()
    with console.activity("quick", progress=False, delay=1.0):
        pass
    assert not caplog.records


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_the_demo_in_a_fresh_venv(tmp_path):
    """`make wheel-check`: build the wheel, a new venv, torch first, the wheel, then the commands."""
    import shutil
    source = tmp_path / "source"                       # a copy: setuptools writes build/ next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "reports", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True)
    wheel = next((tmp_path / "dist").glob("spray-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "spray/configs/template.yaml" in names and "spray/pipelines/audit.py" in names
    assert not any(n.startswith("pipelines/") for n in names) and any(n.endswith("licenses/LICENSE") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "SPRAY_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    spray_bin = str(venv / "bin" / "spray")

    def run(*argv):
        out = subprocess.run(list(argv), cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, (argv, out.stdout[-2000:], out.stderr[-2000:])
        return out

    assert run(spray_bin, "--version").stdout.strip() == f"spray {spray.__version__}"
    assert run(py, "-m", "spray", "--version").stdout.strip() == f"spray {spray.__version__}"
    run(spray_bin, "init")
    assert (work / "spray-job.yaml").read_text() == (ROOT / "configs" / "template.yaml").read_text()
    assert subprocess.run([py, "-c", "import pipelines"], cwd=work, capture_output=True).returncode != 0
    demo = run(spray_bin, "demo", "--small", "--out", "run")
    assert "flagged: class 0" in demo.stdout and (work / "run" / "report" / "index.html").is_file()
    assert "\r" not in demo.stderr                                        # no bar frames off a terminal
    assert (work / "run" / "report" / "assets" / "plotly.min.js").stat().st_size > 1_000_000
