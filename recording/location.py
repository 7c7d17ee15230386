"""Where recordings are kept: one answer for the node and for ``python -m recording``.

The node's option is ``recordings_dir`` (``MEDSTAGE_RECORDINGS_DIR``, or ``recordings_dir`` in the TOML
file named by ``--config`` or ``MEDSTAGE_CONFIG``; docs/configuration.md). The tools cannot import the
server's configuration (``recording`` sits below ``server``), so they read these same sources here, with
the same precedence: environment, then file, then the default.

The default is the user's data directory, not a path relative to the working directory: a session
recorded by a node started in one directory must be found by ``verify`` run from any other.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

ENV_DIR = "MEDSTAGE_RECORDINGS_DIR"
ENV_CONFIG = "MEDSTAGE_CONFIG"
ENV_RETENTION = "MEDSTAGE_RECORDING_RETENTION_DAYS"


class LocationError(ValueError):
    """The configuration file named cannot be read."""


def default_root(env: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/medstage/recordings``, by default ``~/.local/share/medstage/recordings``."""
    data_home = env.get("XDG_DATA_HOME", "").strip()
    # A relative XDG_DATA_HOME is invalid by the spec and ignored, as it would depend on the directory.
    base = Path(data_home) if data_home and Path(data_home).is_absolute() else _home(env) / ".local/share"
    return base / "medstage" / "recordings"


def configured_root(config_file: str | None, env: Mapping[str, str]) -> Path:
    """The recordings directory a node started with this ``--config`` and environment writes to."""
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR])
    path = config_file or env.get(ENV_CONFIG)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LocationError(f"config file {path}: {exc}") from None
        if "recordings_dir" in data:
            return Path(str(data["recordings_dir"]))
    return default_root(env)


def configured_retention_days(config_file: str | None, env: Mapping[str, str]) -> int:
    """The node's ``recording_retention_days`` (0: keep forever), from the same sources as the node."""
    value: object = env.get(ENV_RETENTION)
    path = config_file or env.get(ENV_CONFIG)
    if value is None and path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LocationError(f"config file {path}: {exc}") from None
        value = data.get("recording_retention_days")
    if value is None:
        return 0
    try:
        days = int(str(value))
    except ValueError:
        raise LocationError(f"recording_retention_days: {value!r} is not a number of days") from None
    if days < 0:
        raise LocationError("recording_retention_days must be >= 0 (0: keep forever)")
    return days


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "").strip()
    return Path(home) if home else Path.home()
