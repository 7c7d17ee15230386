"""Configuration: defaults, TOML file, environment, precedence, and clear errors."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from rooms.rates import Rate, RateLimits
from server.config import Config, ConfigError, load


def test_defaults_need_nothing() -> None:
    config = load(env={})
    assert config.port == 8080 and config.media_slots == 6
    assert config.ice_servers == [], "no STUN unless configured"
    assert config.url == "http://127.0.0.1:8080"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "medstage.toml"
    path.write_text('port = 9000\nmedia_slots = 4\nice_addresses = ["10.0.0.5"]\n')
    config = load(str(path), env={"MEDSTAGE_MEDIA_SLOTS": "3"}, overrides={"port": 9100})
    assert (config.port, config.media_slots, config.ice_addresses) == (9100, 3, ["10.0.0.5"])


def test_nack_limits_reach_the_media_config() -> None:
    config = load(env={"MEDSTAGE_NACK_HOLD_OFF_MS": "250", "MEDSTAGE_NACK_BUDGET_PERCENT": "5"})
    resend = config.media.resend
    assert (resend.hold_off, resend.budget) == (0.25, 0.05)
    assert (resend.max_resends, resend.burst) == (2, 100)  # the defaults (docs/configuration.md)


def test_gc_options_reach_the_gc_settings() -> None:
    config = load(
        env={"MEDSTAGE_GC_FREEZE": "off", "MEDSTAGE_GC_GEN0_THRESHOLD": "0", "MEDSTAGE_GC_WAVE": "5"}
    )
    assert (config.gc.freeze, config.gc.gen0_threshold, config.gc.wave) == (False, 0, 5)
    assert load(env={}).gc.freeze is True


def test_the_single_port_options_reach_the_media_config() -> None:
    assert (load(env={}).media.single_port, load(env={}).media.media_port) == (True, 0)
    config = load(env={"MEDSTAGE_MEDIA_PORT": "3478", "MEDSTAGE_MEDIA_SINGLE_PORT": "false"})
    assert (config.media.single_port, config.media.media_port) == (False, 3478)
    with pytest.raises(ConfigError, match="media_port must be 0-65535"):
        load(env={"MEDSTAGE_MEDIA_PORT": "70000"})


def test_ice_servers_from_urls_or_json() -> None:
    config = load(env={"MEDSTAGE_ICE_SERVERS": "stun:stun.example.org:3478"})
    assert config.ice_servers[0].urls == ["stun:stun.example.org:3478"]
    config = load(
        env={
            "MEDSTAGE_ICE_SERVERS": '[{"urls": "turn:turn.example.org", "username": "u", "credential": "c"}]'
        }
    )
    assert config.ice_servers[0].to_browser() == {
        "urls": ["turn:turn.example.org"],
        "username": "u",
        "credential": "c",
    }


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MEDSTAGE_PORT": "eighty"}, "port"),
        ({"MEDSTAGE_MEDIA_SLOTS": "0"}, "media_slots"),
        ({"MEDSTAGE_ICE_SERVERS": "[{"}, "ice_servers"),
        ({"MEDSTAGE_ICE_SERVERS": '[{"urls": "http://x"}]'}, "stun:"),
        ({"MEDSTAGE_LOG_FORMAT": "xml"}, "log_format"),
        ({"MEDSTAGE_RATE_LIMITS": "questions=3/30"}, "unknown class 'questions'"),
        ({"MEDSTAGE_RATE_LIMITS": "hand=3"}, "hand=COUNT/SECONDS"),
        ({"MEDSTAGE_RATE_LIMITS": "hand=0/30"}, "hand=COUNT/SECONDS"),
        ({"MEDSTAGE_RATE_LIMITS": "comment=3/30"}, "comment_rate"),
        ({"MEDSTAGE_QUESTION_MAX_OPEN": "0"}, "question_max_open"),
        ({"MEDSTAGE_MAX_DEPTH": "2"}, "max_depth"),
        ({"MEDSTAGE_MAX_DEPTH": "100000"}, "max_depth"),
        ({"MEDSTAGE_NACK_MAX_RESENDS": "-1"}, "nack_max_resends"),
        ({"MEDSTAGE_NACK_BUDGET_PERCENT": "101"}, "nack_budget_percent"),
        ({"MEDSTAGE_NACK_BURST_PACKETS": "0"}, "nack_burst_packets"),
        ({"MEDSTAGE_NACK_HOLD_OFF_MS": "-5"}, "nack_hold_off_ms"),
        ({"MEDSTAGE_LOOP_LAG_INTERVAL_MS": "0"}, "loop_lag_interval_ms"),
        ({"MEDSTAGE_GC_GEN0_THRESHOLD": "-1"}, "gc_gen0_threshold"),
        ({"MEDSTAGE_GC_WAVE": "0"}, "gc_wave"),
        ({"MEDSTAGE_GC_LEAVE_SHARE": "1.5"}, "gc_leave_share"),
        ({"MEDSTAGE_GC_QUIET_S": "0"}, "gc_quiet_s"),
        ({"MEDSTAGE_GC_QUIET_S": "60", "MEDSTAGE_GC_FULL_INTERVAL_S": "30"}, "gc_full_interval_s"),
        ({"MEDSTAGE_LISTEN_BACKLOG": "8"}, "listen_backlog"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(env=env)


def test_unknown_file_option_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load(str(path), env={})


def test_rate_limits_from_a_file_table_or_the_environment(tmp_path: Path) -> None:
    """Classes not named keep their defaults; the stage settings get them (docs/configuration.md)."""
    path = tmp_path / "medstage.toml"
    path.write_text('rate_limits = { question = "2/60", hand = "4/30" }\nquestion_max_per_person = 5\n')
    config = load(str(path), env={})
    assert (config.rates.question, config.rates.hand) == (Rate(2, 60.0), Rate(4, 30.0))
    assert config.rates.vote == RateLimits().vote and config.question_max_per_person == 5
    config = load(str(path), env={"MEDSTAGE_RATE_LIMITS": "join=10/60"})
    assert config.rates.join == Rate(10, 60.0) and config.rates.question == RateLimits().question


def test_every_option_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [f.name for f in fields(Config) if f"| `{f.name}` | `MEDSTAGE_{f.name.upper()}`" not in text]
    assert missing == [] or missing == ["api_keys"], missing  # api_keys: docs/protocol.md, "Tokens"


def test_the_signing_key_lives_beside_the_recordings_never_inside(tmp_path: Path) -> None:
    default = load(env={})
    assert default.signing_key_path == Path(default.recordings_dir).parent / "keys" / "ledger-ed25519.key"
    recordings = tmp_path / "rec"
    config = load(env={"MEDSTAGE_RECORDINGS_DIR": str(recordings)})
    assert config.signing_key_path == tmp_path / "keys" / "ledger-ed25519.key"
    chosen = load(env={"MEDSTAGE_SIGNING_KEY": str(tmp_path / "secret" / "node.key")})
    assert chosen.signing_key_path == tmp_path / "secret" / "node.key"
    with pytest.raises(ConfigError, match="must be a file outside recordings_dir"):
        load(env={"MEDSTAGE_RECORDINGS_DIR": str(recordings), "MEDSTAGE_SIGNING_KEY": str(recordings / "k")})


def test_media_workers_one_per_core_unless_set() -> None:
    import os

    assert load(env={}).media_worker_count == (os.cpu_count() or 1)
    assert load(env={"MEDSTAGE_MEDIA_WORKERS": "0"}).media_worker_count == 0
    assert load(env={"MEDSTAGE_MEDIA_WORKERS": "3"}).media_worker_count == 3
    with pytest.raises(ConfigError, match="media_workers"):
        load(env={"MEDSTAGE_MEDIA_WORKERS": "-2"})
    with pytest.raises(ConfigError, match="media_workers"):
        load(env={"MEDSTAGE_MEDIA_WORKERS": "many"})
