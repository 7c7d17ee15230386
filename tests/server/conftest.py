"""The server suite runs three times: on the embedded backend, on Redis, and through the relay (stages
created on one node, every WebSocket on another node of the same Redis)."""

from __future__ import annotations

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


@pytest.fixture(scope="module", params=["memory", "redis", "relay"])
def module_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, node_env: dict[str, str]
) -> Iterator[object]:
    directory: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "memory":
        node = start_node(directory, node_env)
        yield node
        _stopped_cleanly(node)
        return
    redis = RedisServer(directory)
    redis.start()
    env = {**node_env, "MEDSTAGE_REDIS_URL": redis.url}
    nodes: list[RunningNode] = []
    try:
        nodes.append(start_node(directory, env))
        if request.param == "redis":
            yield nodes[0]
        else:
            nodes.append(start_node(directory, env))
            # Each node learns of the other at its next heartbeat, and tells its clients (`nodes`): so
            # that message cannot land in the middle of a test, wait until both know.
            deadline = time.monotonic() + 10
            while not all(node.metrics()["medstage_nodes"] == 2 for node in nodes):
                assert time.monotonic() < deadline, "the nodes did not see each other's heartbeat"
                time.sleep(0.05)
            yield Deployment(nodes[0], nodes[1])
        for node in nodes:
            _stopped_cleanly(node)
    finally:
        for node in nodes:
            node.stop()
        redis.stop()
