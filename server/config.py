"""Configuration: one typed object, built once at start-up from defaults, a TOML file and the environment.

Precedence: command-line flags > environment (``MEDSTAGE_*``) > ``--config`` file > defaults.
Every option is documented in docs/configuration.md; nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from media.nackguard import ResendLimits
from media.peer import IceServer, MediaConfig
from recording.keys import default_keys_dir
from recording.location import default_root
from recording.people import default_people_dir
from recording.signing import default_key_path
from rooms.rates import Rate, RateClass, RateLimits
from server.auth import parse_keys
from server.gcpolicy import GcSettings
from server.nesting import MAX_DEPTH
from server.turn import TurnSettings


class ConfigError(ValueError):
    pass


DEFAULT_POLICY_TEXT = (
    "This session may be recorded. You decide, and may change your mind at any time, whether the "
    "recording keeps (1) your camera and microphone, (2) your comments, questions and votes, and "
    "(3) whether the recording may be shared with the attendees of this session. Nothing you did not "
    "agree to is stored: without consent your media is not captured and your comments are kept only "
    "as anonymous placeholders. Every decision is recorded with its time and this policy's version."
)


@dataclass(frozen=True, slots=True)
class Config:
    # Empty: not set, so ``listen_host`` decides (loopback in development mode, see there).
    host: str = ""
    port: int = 8080
    public_url: str = ""
    ice_addresses: list[str] = field(default_factory=list)
    ice_servers: list[IceServer] = field(default_factory=list)
    # TURN for browsers (server/turn.py): coturn's shared-secret scheme, a credential per participant.
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = field(default="", repr=False)
    turn_secret_file: str = ""
    turn_ttl: int = 3600  # seconds
    stun_urls: list[str] = field(default_factory=list)
    ice_transport_policy: str = "all"  # the browsers' RTCPeerConnection policy: all | relay
    media_slots: int = 6
    max_screen_shares: int = 1  # screen shares a stage allows at once (rooms/sharing.py); 0: none
    # Processes that own viewers' connections (media/workers.py): -1 one per core, 0 none (in-process).
    media_workers: int = -1
    # Viewers' ICE on one UDP socket per address and process (media/udpmux.py), sends batched.
    media_single_port: bool = True
    media_probe_feedback: bool = True  # transport feedback on padding probes (media/twcc.py)
    media_port: int = 0  # that socket's port; 0: an ephemeral one
    loss_timeout_ms: int = 150
    pli_interval_ms: int = 500
    # Answering a subscriber's NACKs, per slot (media/nackguard.py): a viewer must not make us resend.
    nack_hold_off_ms: int = 100
    nack_max_resends: int = 2
    nack_budget_percent: int = 20
    nack_burst_packets: int = 100
    max_frame_bytes: int = 65536
    max_depth: int = MAX_DEPTH  # arrays and objects nested in a frame or an API body (server/nesting.py)
    comment_max_chars: int = 500
    comment_history: int = 100
    comment_rate: int = 5
    comment_rate_window_s: float = 10.0
    rate_limits: str = ""  # "question=3/30,hand=5/30": see parse_rate_limits()
    question_max_open: int = 200
    question_max_per_person: int = 3
    question_history: int = 50
    outbox_limit: int = 512
    # The user's data directory (recording/location.py), so `python -m recording` finds it from anywhere.
    recordings_dir: str = field(default_factory=lambda: str(default_root(os.environ)))
    recording_retention_days: int = 0  # after a session stops; 0: forever (clubs and stages override)
    recording_sweep_interval_s: float = 3600.0  # the retention sweeper's period; 0: the node never sweeps
    signing_key: str = ""  # empty: keys/ledger-ed25519.key beside recordings_dir (recording/signing.py)
    # Data rights (issue 15; docs/recording.md): the people ledger, and people's keys (file store).
    people_dir: str = ""  # empty: people/ beside recordings_dir
    people_keys_dir: str = ""  # empty: keys/people/ beside recordings_dir; unused on Redis
    recording_mode: str = "manual"
    # How long the playback page's cookie opens one session (/r/<session>; docs/recording.md, Playback).
    playback_cookie_ttl_s: float = 14_400.0
    consent_policy_version: str = "2026-11"
    consent_policy_file: str = ""
    speaking_requires_consent: bool = False
    shutdown_timeout_s: float = 5.0
    # Pending connections the kernel queues for accept (capped by net.core.somaxconn). aiohttp's 128
    # drops the SYNs of a join wave beyond it; each dropped one retries 1, 3, 7 ... s later.
    listen_backlog: int = 4096
    api_keys: str = ""
    redis_url: str = ""
    node_id: str = ""
    lease_ttl_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    log_format: str = "auto"
    log_level: str = "info"
    # Loop health and GC policy (server/loophealth.py, server/gcpolicy.py; docs/operations.md).
    loop_lag_interval_ms: int = 50
    gc_freeze: bool = True
    gc_gen0_threshold: int = 10_000  # Python's 700 ran ~950 young collections for 80 joins
    gc_wave: int = 20
    gc_leave_share: float = 0.25
    gc_quiet_s: float = 5.0
    gc_full_interval_s: float = 900.0
    webhook_urls: list[str] = field(default_factory=list)
    webhook_secret: str = ""
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    # Composite exports (server/host/exports.py): one runs at a time, this many wait behind it.
    export_queue: int = 4
    export_size: str = "1280x720"  # the exported picture, WIDTHxHEIGHT (even numbers)
    export_nice: int = 19  # the export process's niceness (and its session's autogroup's)

    @property
    def dev_mode(self) -> bool:
        """No API keys: the node hands tokens, any role included, to whoever asks (/api/dev/token)."""
        return not parse_keys(self.api_keys)

    @property
    def listen_host(self) -> str:
        """The address the node binds. Unless set, loopback in development mode: whoever can reach the
        node may mint a host or moderator token there, so the network gets it only when asked to."""
        if self.host:
            return self.host
        return "127.0.0.1" if self.dev_mode else "0.0.0.0"

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::") else self.listen_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def signing_key_path(self) -> Path:
        """The node's Ed25519 key that signs consent ledger heads: outside every session directory."""
        return Path(self.signing_key) if self.signing_key else default_key_path(self.recordings_dir)

    @property
    def people_path(self) -> Path:
        """The people ledger's directory (recording/people.py): outside every session directory."""
        return Path(self.people_dir) if self.people_dir else default_people_dir(self.recordings_dir)

    @property
    def people_keys_path(self) -> Path:
        """The file key store's directory (recording/keys.py): outside the recordings, as the signing key."""
        return Path(self.people_keys_dir) if self.people_keys_dir else default_keys_dir(self.recordings_dir)

    @property
    def consent_policy_text(self) -> str:
        if self.consent_policy_file:
            return Path(self.consent_policy_file).read_text(encoding="utf-8")
        return DEFAULT_POLICY_TEXT

    @property
    def rates(self) -> RateLimits:
        """The rate of every class of command but comments (``rate_limits`` over the defaults)."""
        return parse_rate_limits(self.rate_limits)

    @property
    def gc(self) -> GcSettings:
        return GcSettings(
            freeze=self.gc_freeze,
            gen0_threshold=self.gc_gen0_threshold,
            wave=self.gc_wave,
            leave_share=self.gc_leave_share,
            quiet_s=self.gc_quiet_s,
            full_interval_s=self.gc_full_interval_s,
        )

    @property
    def turn(self) -> TurnSettings:
        """The TURN/STUN servers browsers get in ``joined``, with the secret their credentials use."""
        secret = self.turn_secret
        if self.turn_secret_file:
            secret = Path(self.turn_secret_file).read_text(encoding="utf-8").strip()
        return TurnSettings(urls=self.turn_urls, stun_urls=self.stun_urls, secret=secret, ttl=self.turn_ttl)

    @property
    def media_worker_count(self) -> int:
        """Media worker processes to run: ``media_workers``, or one per core when it is -1."""
        return (os.cpu_count() or 1) if self.media_workers < 0 else self.media_workers

    @property
    def media(self) -> MediaConfig:
        return MediaConfig(
            ice_addresses=self.ice_addresses,
            ice_servers=self.ice_servers,
            slots=self.media_slots,
            single_port=self.media_single_port,
            probe_feedback=self.media_probe_feedback,
            media_port=self.media_port,
            loss_timeout=self.loss_timeout_ms / 1000,
            pli_interval=self.pli_interval_ms / 1000,
            resend=ResendLimits(
                hold_off=self.nack_hold_off_ms / 1000,
                max_resends=self.nack_max_resends,
                budget=self.nack_budget_percent / 100,
                burst=self.nack_burst_packets,
            ),
        )


_ENV_PREFIX = "MEDSTAGE_"


def _parse_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _parse_ice_servers(value: Any) -> list[IceServer]:
    """A JSON list of RTCIceServer-like objects, or a comma-separated list of URLs."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"ice_servers: invalid JSON: {exc}") from None
        else:
            return [IceServer(urls=[u]) for u in _parse_list(text)]
    servers = []
    for item in value:
        if isinstance(item, str):
            servers.append(IceServer(urls=[item]))
            continue
        if not isinstance(item, dict) or "urls" not in item:
            raise ConfigError("ice_servers: each entry needs 'urls'")
        urls = item["urls"] if isinstance(item["urls"], list) else [item["urls"]]
        for url in urls:
            if not str(url).startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"ice_servers: {url!r} is not a stun:/turn:/turns: URL")
        servers.append(IceServer([str(u) for u in urls], item.get("username"), item.get("credential")))
    return servers


def parse_rate_limits(text: str) -> RateLimits:
    """``question=3/30,hand=5/30``: per class, at most ``count`` commands per ``seconds``; classes not
    named keep their defaults (docs/configuration.md)."""
    limits = RateLimits()
    classes = [k.value for k in RateClass if k is not RateClass.COMMENT]
    for item in _parse_list(text):
        name, _, value = item.partition("=")
        name = name.strip()
        if name == RateClass.COMMENT:
            raise ConfigError("rate_limits: comments have comment_rate and comment_rate_window_s")
        if name not in classes:
            raise ConfigError(f"rate_limits: unknown class {name!r} (one of {', '.join(classes)})")
        count, slash, seconds = value.partition("/")
        try:
            if not slash:
                raise ValueError("not count/seconds")
            rate = Rate(int(count), float(seconds))
        except ValueError as exc:
            raise ConfigError(f"rate_limits: {item!r} is not {name}=COUNT/SECONDS: {exc}") from None
        limits = replace(limits, **{name: rate})
    return limits


def _coerce(name: str, value: Any) -> Any:
    default = Config.__dataclass_fields__[name].default
    try:
        if name in ("ice_addresses", "webhook_urls", "turn_urls", "stun_urls"):
            return _parse_list(value)
        if name == "ice_servers":
            return _parse_ice_servers(value)
        if name == "api_keys" and isinstance(value, dict):  # a TOML table: key = "secret"
            return ",".join(f"{k}:{v}" for k, v in value.items())
        if name == "rate_limits" and isinstance(value, dict):  # a TOML table: question = "3/30"
            return ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(default, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot use {value!r}: {exc}") from None


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    names = {f.name for f in fields(Config)}
    path = config_file or env.get(_ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, value in data.items():
            if key not in names:
                raise ConfigError(f"config file {path}: unknown option {key!r}")
            values[key] = _coerce(key, value)
    for name in names:
        key = _ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce(name, env[key])
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    if not values.get("recordings_dir"):  # unset or empty: as `python -m recording` assumes
        values["recordings_dir"] = str(default_root(env))
    config = Config(**values)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if not 0 <= config.port <= 65535:
        raise ConfigError("port must be 0-65535")
    if not 0 <= config.media_port <= 65535:
        raise ConfigError("media_port must be 0-65535")
    if not 1 <= config.media_slots <= 16:
        raise ConfigError("media_slots must be 1-16")
    if not 0 <= config.max_screen_shares <= config.media_slots:
        raise ConfigError("max_screen_shares must be 0-media_slots")
    if not -1 <= config.media_workers <= 256:
        raise ConfigError("media_workers must be -1 (one per core), 0 (in-process) or up to 256")
    if config.max_frame_bytes < 1024:
        raise ConfigError("max_frame_bytes must be at least 1024")
    if not 4 <= config.max_depth <= 512:  # deeper would let the decoders' recursion be the limit
        raise ConfigError("max_depth must be 4-512")
    if not 60 <= config.playback_cookie_ttl_s <= 7 * 24 * 3600:
        raise ConfigError("playback_cookie_ttl_s must be 60-604800")
    if not 1 <= config.comment_max_chars <= 10_000:
        raise ConfigError("comment_max_chars must be 1-10000")
    if config.comment_history < 0 or config.comment_rate < 1 or config.comment_rate_window_s <= 0:
        raise ConfigError("comment_history >= 0, comment_rate >= 1, comment_rate_window_s > 0")
    if config.question_max_open < 1 or config.question_max_per_person < 1 or config.question_history < 0:
        raise ConfigError("question_max_open >= 1, question_max_per_person >= 1, question_history >= 0")
    parse_rate_limits(config.rate_limits)
    if config.outbox_limit < 16:
        raise ConfigError("outbox_limit must be at least 16")
    if not 16 <= config.listen_backlog <= 65535:
        raise ConfigError("listen_backlog must be 16-65535")
    if not 0 <= config.recording_retention_days <= 36_500:
        raise ConfigError("recording_retention_days must be 0-36500 (0: keep forever)")
    if config.recording_sweep_interval_s < 0:
        raise ConfigError("recording_sweep_interval_s must be >= 0 (0: the node does not sweep)")
    if config.recording_mode not in ("off", "manual", "auto"):
        raise ConfigError("recording_mode must be off, manual or auto")
    if not 1 <= config.export_queue <= 1000:
        raise ConfigError("export_queue must be 1-1000")
    if not 0 <= config.export_nice <= 19:
        raise ConfigError("export_nice must be 0-19")
    width, _, height = config.export_size.lower().partition("x")
    sized = width.isdigit() and height.isdigit() and 16 <= int(width) <= 3840 and 16 <= int(height) <= 2160
    if not sized or int(width) % 2 or int(height) % 2:
        raise ConfigError("export_size must be WIDTHxHEIGHT, even numbers from 16x16 to 3840x2160")
    if not config.consent_policy_version.strip():
        raise ConfigError("consent_policy_version must not be empty")
    key = config.signing_key_path.resolve()
    if key.is_dir() or key.is_relative_to(Path(config.recordings_dir).resolve()):
        raise ConfigError(f"signing_key {key}: must be a file outside recordings_dir")
    if config.consent_policy_file and not Path(config.consent_policy_file).is_file():
        raise ConfigError(f"consent_policy_file {config.consent_policy_file}: no such file")
    try:
        parse_keys(config.api_keys)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.redis_url and not config.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url must start with redis://, rediss:// or unix://")
    if config.lease_ttl_ms < 500 or config.heartbeat_interval_ms < 100:
        raise ConfigError("lease_ttl_ms must be >= 500 and heartbeat_interval_ms >= 100")
    if config.node_id and not config.node_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError("node_id: letters, digits, - and _ only")
    if config.log_format not in ("auto", "json", "text"):
        raise ConfigError("log_format must be auto, json or text")
    if not 1 <= config.loop_lag_interval_ms <= 10_000:
        raise ConfigError("loop_lag_interval_ms must be 1-10000")
    if config.gc_gen0_threshold < 0 or config.gc_wave < 1:
        raise ConfigError("gc_gen0_threshold must be >= 0 (0: Python's) and gc_wave >= 1")
    if not 0 <= config.gc_leave_share <= 1:
        raise ConfigError("gc_leave_share must be 0-1")
    if config.gc_quiet_s <= 0 or config.gc_full_interval_s < config.gc_quiet_s:
        raise ConfigError("gc_quiet_s must be > 0 and gc_full_interval_s >= gc_quiet_s")
    if config.loss_timeout_ms < 0 or config.pli_interval_ms < 50:
        raise ConfigError("loss_timeout_ms must be >= 0 and pli_interval_ms >= 50")
    if not 0 <= config.nack_hold_off_ms <= 10_000:
        raise ConfigError("nack_hold_off_ms must be 0-10000")
    if not 0 <= config.nack_max_resends <= 10:
        raise ConfigError("nack_max_resends must be 0-10")
    if not 0 <= config.nack_budget_percent <= 100:
        raise ConfigError("nack_budget_percent must be 0-100")
    if not 1 <= config.nack_burst_packets <= 1024:  # more than the ring holds would be no limit
        raise ConfigError("nack_burst_packets must be 1-1024")
    for url in config.webhook_urls:
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad IPv6 literal or port
            valid = False
        if not valid:
            raise ConfigError(f"webhook_urls: {url!r} is not an http:// or https:// URL")
    if config.webhook_urls and len(config.webhook_secret) < 16:
        raise ConfigError("webhook_secret (at least 16 characters) is required with webhook_urls")
    if config.webhook_timeout_s <= 0 or config.webhook_max_attempts < 1:
        raise ConfigError("webhook_timeout_s must be > 0 and webhook_max_attempts >= 1")
    _validate_turn(config)


def _validate_turn(config: Config) -> None:
    """TURN URLs need a shared secret (and the reverse); messages never quote the secret."""
    for url in config.turn_urls:
        if not url.startswith(("turn:", "turns:")) or len(url) > 256:
            raise ConfigError(f"turn_urls: {url!r} is not a turn:/turns: URL")
    for url in config.stun_urls:
        if not url.startswith("stun:") or len(url) > 256:
            raise ConfigError(f"stun_urls: {url!r} is not a stun: URL")
    if config.turn_secret and config.turn_secret_file:
        raise ConfigError("turn_secret and turn_secret_file: set one of them")
    if config.turn_secret_file and not Path(config.turn_secret_file).is_file():
        raise ConfigError(f"turn_secret_file {config.turn_secret_file}: no such file")
    has_secret = bool(config.turn_secret or config.turn_secret_file)
    if config.turn_urls and not has_secret:
        raise ConfigError("turn_urls need turn_secret or turn_secret_file (coturn's static-auth-secret)")
    if has_secret and not config.turn_urls:
        raise ConfigError("turn_secret without turn_urls: no TURN server to use it with")
    if has_secret and len(config.turn.secret) < 16:
        raise ConfigError("the TURN secret must be at least 16 characters")
    if not 60 <= config.turn_ttl <= 7 * 86400:
        raise ConfigError("turn_ttl must be 60-604800 seconds")
    if config.ice_transport_policy not in ("all", "relay"):
        raise ConfigError("ice_transport_policy must be all or relay")
    if config.ice_transport_policy == "relay" and not (config.turn_urls or _has_turn(config.ice_servers)):
        raise ConfigError("ice_transport_policy relay needs a TURN server (turn_urls or ice_servers)")


def _has_turn(servers: list[IceServer]) -> bool:
    return any(u.startswith(("turn:", "turns:")) for s in servers for u in s.urls)
