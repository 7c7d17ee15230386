"""The server suite runs three times: on the embedded backend, on Redis, and through the relay (stages
created on one node, every WebSocket on another node of the same Redis)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RunningNode, start_node
from tests.support.redis_server import RedisServer


@dataclass
class Deployment:
    """Two nodes on one Redis, seen as one node by the tests: the HTTP API on ``host``, sockets on
    ``front``, so a stage created through the API is served through the relay."""

    host: RunningNode
    front: RunningNode

    @property
    def url(self) -> str:
        return self.host.url

    @property
    def ws_url(self) -> str:
        return self.front.ws_url

    def metrics(self) -> dict[str, float]:
        merged = self.host.metrics()
        for name, value in self.front.metrics().items():
            merged[name] = merged.get(name, 0.0) + value
        return merged

    def log(self) -> str:
        return self.host.log() + self.front.log()


def _stopped_cleanly(node: RunningNode) -> None:
    code = node.stop()
    assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"


@pytest.fixture(scope="module")
def node_env() -> dict[str, str]:
    """More environment for the nodes of ``module_node``: a module overrides this to configure them."""
    return {}


_Key = tuple[str, tuple[tuple[str, str], ...]]


class _Deployments:
    """The suite's running deployments, shared by every module that asks for the same kind with the
    same environment: starting 4 nodes (each with its media workers) and a Redis per module cost about
    a minute and a half of the suite. Two environments of each kind stay up, so modules that alternate
    between the default and ``recording_env`` restart nothing. Each test uses stage ids of its own, so
    a node that served other modules' stages is still a fair node for the next test."""

    PER_KIND = 2

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._live: dict[_Key, tuple[object, list[RunningNode], RedisServer | None]] = {}

    def get(self, kind: str, env: dict[str, str]) -> object:
        # A module may also configure its nodes through os.environ (monkeypatched): that counts too.
        inherited = {k: v for k, v in os.environ.items() if k.startswith("MEDSTAGE_")}
        key = (kind, tuple(sorted({**inherited, **env}.items())))
        live = self._live.pop(key, None)
        if live is not None:
            self._live[key] = live  # most recently used last
            return live[0]
        same_kind = [k for k in self._live if k[0] == kind]
        if len(same_kind) >= self.PER_KIND:  # the least recently used of this kind is done
            self._stop(same_kind[0])
        directory: Path = self._tmp.mktemp(kind)
        redis = None if kind == "memory" else RedisServer(directory)
        nodes: list[RunningNode] = []
        try:
            if redis is not None:
                redis.start()
                env = {**env, "MEDSTAGE_REDIS_URL": redis.url}
            nodes.append(start_node(directory, env))
            served: object = nodes[0]
            if kind == "relay":
                nodes.append(start_node(directory, env))
                # Each node learns of the other at its next heartbeat, and tells its clients
                # (`nodes`): so that message cannot land in the middle of a test, wait until both know.
                deadline = time.monotonic() + 10
                while not all(node.metrics()["medstage_nodes"] == 2 for node in nodes):
                    assert time.monotonic() < deadline, "the nodes did not see each other's heartbeat"
                    time.sleep(0.05)
                served = Deployment(nodes[0], nodes[1])
        except BaseException:
            for node in nodes:
                node.stop()
            if redis is not None:
                redis.stop()
            raise
        self._live[key] = (served, nodes, redis)
        return served

    def _stop(self, key: _Key) -> None:
        _served, nodes, redis = self._live.pop(key)
        try:
            for node in nodes:
                _stopped_cleanly(node)
        finally:
            for node in nodes:
                node.stop()
            if redis is not None:
                redis.stop()

    def close(self) -> None:
        errors = []
        for key in list(self._live):
            try:
                self._stop(key)
            except AssertionError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def _deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Deployments]:
    deployments = _Deployments(tmp_path_factory)
    yield deployments
    deployments.close()


@pytest.fixture(scope="session")
def recording_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """For a module's ``node_env``: nodes that may record (``recording.start`` is refused on a stage
    that may not, whoever asks), into one directory for the modules that share these nodes."""
    return {
        "MEDSTAGE_RECORDING_MODE": "manual",
        "MEDSTAGE_RECORDINGS_DIR": str(tmp_path_factory.mktemp("recordings")),
    }


@pytest.fixture(scope="module", params=["memory", "redis", "relay"])
def module_node(
    request: pytest.FixtureRequest, _deployments: _Deployments, node_env: dict[str, str]
) -> object:
    """The module's node, of each kind in turn: shared with other modules of the same environment."""
    return _deployments.get(request.param, node_env)
