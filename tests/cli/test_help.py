"""Every command documents itself; --help imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.cli.app import build

COMMANDS = sorted(build().commands)


def test_top_level_help_lists_commands(cli) -> None:
    r = cli("--help")
    assert r.code == 0
    for name in ("validate", "prepare", "space", "estimate", "backends"):
        assert name in r.out


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help_with_an_example(cli, name: str) -> None:
    command = build().commands[name]
    r = cli(name, "--help")
    assert r.code == 0
    assert command.help, f"{name} has no help text"
    subcommands = getattr(command, "commands", None)
    if subcommands:  # a group: each subcommand needs an example
        for sub in subcommands.values():
            assert "Example:" in (sub.help or ""), f"{name} {sub.name} has no example"
    else:
        assert "Example:" in r.out, f"{name} --help shows no example"


def test_help_imports_no_heavy_library() -> None:
    heavy = ["torch", "transformers", "mlflow", "openai", "pandas", "optuna", "numpy", "tiktoken"]
    code = (
        "import sys, io, contextlib\n"
        "from orchestrator.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run(['--help']) == 0\n"
        "    for c in ['validate', 'prepare', 'space', 'estimate', 'backends']:\n"
        "        assert run([c, '--help']) == 0\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.replace("'", '"')) == []


def test_usage_errors_exit_2(cli) -> None:
    r = cli("validate", "--bogus")
    assert r.code == 2 and "No such option: --bogus" in r.err
    r = cli("nonsense")
    assert r.code == 2


def test_version_prints_the_installed_version(cli) -> None:
    from orchestrator import __version__

    r = cli("--version")
    assert r.code == 0
    assert r.out.strip() == f"ftsweep {__version__}"


def test_shell_completion_completes_commands() -> None:
    """What bash's completion function asks (`ftsweep re<TAB>`), answered by the installed
    command."""
    import os

    env = dict(
        os.environ, _FTSWEEP_COMPLETE="complete_bash", COMP_WORDS="ftsweep re", COMP_CWORD="1"
    )
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"report", "retune"}


def test_a_model_pulled_for_token_counts_says_so(tmp_path) -> None:
    """Counting tokens with a local model not yet in the cache builds it first: the user sees
    that happen on stderr, not minutes of silence."""
    import os

    from orchestrator.backends.local.tasks import write_task

    train, _ = write_task("reverse", tmp_path / "data", n_train=12, n_valid=2)
    env = dict(os.environ, FTSWEEP_HOME=str(tmp_path / "home"))
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(train), "--model", "tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "building the tiny model" in r.stderr
    assert "tiny ready in" in r.stderr
