"""The README cannot rot: every command it shows is run here, by `make test`/CI, or by the demo.

- ``piecework ...`` lines: the subcommand exists and accepts every ``--flag`` shown.
- ``npm run X`` / ``make X``: the script or target exists (``make demo`` and ``make test`` are
  what CI and the demo run end to end).
- The Ignition deploy shown for Sepolia is run for real against a local anvil (same module,
  ``--network localhost``), so the one documented testnet command is known to work.
- Every ``PIECEWORK_*`` variable in the configuration table is a real setting, and every
  setting is in the table.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from channel.cli import cli
from channel.config import Settings
from channel.devnet import Supervisor

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    lines: list[str] = []
    for block in blocks:
        pending = ""
        for raw in block.splitlines():
            line = raw.split("  #", 1)[0].rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if line:
                lines.append(line)
    return lines


def _piecework_commands() -> list[list[str]]:
    found = []
    for line in _shell_lines():
        words = shlex.split(line)
        if "piecework" in words:
            found.append(words[words.index("piecework") + 1 :])
    return found


def test_readme_shows_piecework_commands() -> None:
    assert len(_piecework_commands()) >= 8


@pytest.mark.parametrize("argv", _piecework_commands(), ids=lambda a: " ".join(a[:2]))
def test_piecework_command_and_flags_exist(argv: list[str]) -> None:
    path = [w for w in argv if not w.startswith("-")]
    # Subcommands are the leading non-option words that click knows (e.g. "keys new").
    command = cli
    used: list[str] = []
    for word in path:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
        used.append(word)
    assert used, f"README shows an unknown piecework command: {argv}"
    result = CliRunner().invoke(cli, [*used, "--help"])
    assert result.exit_code == 0, result.output
    for flag in (w.split("=")[0] for w in argv if w.startswith("--")):
        assert flag in result.output, f"`piecework {' '.join(used)}` has no {flag}"


def test_npm_scripts_and_make_targets_exist() -> None:
    scripts = json.loads((ROOT / "package.json").read_text())["scripts"]
    makefile = (ROOT / "Makefile").read_text()
    for line in _shell_lines():
        words = shlex.split(line)
        if words[:2] == ["npm", "run"]:
            assert words[2] in scripts, f"README runs missing npm script {words[2]}"
        if words[:1] == ["make"]:
            assert re.search(rf"^{words[1]}:", makefile, re.M), f"no make target {words[1]}"
        if words[:2] == ["npm", "test"]:
            assert "test" in scripts


def test_configuration_table_matches_settings() -> None:
    documented = set(re.findall(r"`(PIECEWORK_[A-Z_]+)`", README))
    settings = {f"PIECEWORK_{name.upper()}" for name in Settings.model_fields}
    test_only = {"PIECEWORK_TEST_POSTGRES_URL", "PIECEWORK_FUZZ_PROFILE", "PIECEWORK_LONG_TESTS"}
    assert settings - documented == set(), "settings missing from the README table"
    assert documented - settings - test_only == set(), "README documents unknown variables"


@pytest.mark.integration
def test_ignition_deploy_command_works_locally(tmp_path: Path) -> None:
    line = next(ln for ln in _shell_lines() if "ignition deploy" in ln)
    argv = shlex.split(line)
    argv[argv.index("--network") + 1] = "localhost"
    with Supervisor(tmp_path / "logs") as sup:
        url, _ = sup.start_anvil()
        env = {**os.environ, "PIECEWORK_RPC_URL": url,
               "PATH": f"{ROOT / 'node_modules/.bin'}:{os.environ['PATH']}"}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240, input="y\n", check=False)
    # Ignition records local deployments under ignition/deployments/chain-31337: remove it so
    # the next run (and the working tree) starts clean.
    subprocess.run(["rm", "-rf", str(ROOT / "ignition/deployments/chain-31337")], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"PaymentChannels.*0x[0-9a-fA-F]{40}", done.stdout), done.stdout
