"""``python -m recording`` looks for a session where the node keeps recordings (issue 11, item 10): the
same ``recordings_dir`` setting (environment, ``--config`` file, default), from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recording.location import configured_root, default_root
from recording.signing import NodeKey, default_key_path
from server.config import load
from tests.recording.signed import signed_session
from tests.recording.test_ledger import record

REPO = Path(__file__).resolve().parents[2]


def test_the_tools_and_the_node_agree_on_the_directory(tmp_path: Path) -> None:
    config = tmp_path / "medstage.toml"
    config.write_text(f'recordings_dir = "{tmp_path / "from-file"}"\n')
    cases: list[tuple[str | None, dict[str, str]]] = [
        (None, {"HOME": "/home/dr"}),
        (None, {"HOME": "/home/dr", "XDG_DATA_HOME": "/srv/data"}),
        (None, {"HOME": "/home/dr", "XDG_DATA_HOME": "relative/ignored"}),
        (None, {"HOME": "/home/dr", "MEDSTAGE_RECORDINGS_DIR": ""}),
        (str(config), {"HOME": "/home/dr"}),
        (None, {"HOME": "/home/dr", "MEDSTAGE_CONFIG": str(config)}),
        (str(config), {"HOME": "/home/dr", "MEDSTAGE_RECORDINGS_DIR": "/var/lib/medstage"}),
    ]
    for config_file, env in cases:
        assert Path(load(config_file, env=env).recordings_dir) == configured_root(config_file, env), env
    assert default_root({"HOME": "/home/dr"}) == Path("/home/dr/.local/share/medstage/recordings")
    assert default_root({"HOME": "/home/dr", "XDG_DATA_HOME": "/srv/data"}) == Path(
        "/srv/data/medstage/recordings"
    )


def make_session(root: Path) -> None:
    """A session as a node leaves it: its ledger's heads signed with the node key kept beside ``root``
    (where ``verify`` looks for it by default)."""
    key = NodeKey.load_or_create(default_key_path(root))
    signed_session(root, key, [record(n) for n in range(3)])


def verify_from(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSTAGE_", "XDG_"))}
    return subprocess.run(
        [sys.executable, "-m", "recording", "verify", "rec-1", *args],
        capture_output=True,
        text=True,
        env={**full_env, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("how", ["default", "env", "config"])
def test_verify_finds_a_session_from_another_working_directory(tmp_path: Path, how: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    args: list[str] = []
    if how == "default":
        root = home / ".local/share/medstage/recordings"
    elif how == "env":
        root = tmp_path / "rec"
        env["MEDSTAGE_RECORDINGS_DIR"] = str(root)
    else:
        root = tmp_path / "rec"
        config = tmp_path / "medstage.toml"
        config.write_text(f'recordings_dir = "{root}"\n')
        args = ["--config", str(config)]
    make_session(root)
    run = verify_from(elsewhere, env, *args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: 3 records"), run.stdout
    assert "signed by key" in run.stdout, run.stdout


def test_an_unreadable_config_file_is_a_usage_error(tmp_path: Path) -> None:
    run = verify_from(tmp_path, {"HOME": str(tmp_path)}, "--config", str(tmp_path / "missing.toml"))
    assert run.returncode == 2 and "missing.toml" in run.stderr, run.stderr
