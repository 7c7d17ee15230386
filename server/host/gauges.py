"""The node's gauges at scrape time: stages, participants, tracks, log backlog, relayed clients,
and the media and recording counters (plain ints on the hot path, read here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media import stats
from recording import stats as recording_stats
from server import metrics

if TYPE_CHECKING:
    from server.host.node import Node


class _NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, value in (*stats.snapshot().items(), *recording_stats.snapshot().items()):
            yield metrics.counter_family(name, metrics.COUNTERS[name], value)
        stages = self.node.stages.values()
        for name, help_, value in (
            ("stages", "Stages on this node", len(self.node.stages)),
            ("participants", "Participants present", sum(len(s.stage.participants) for s in stages)),
            (
                "published_tracks",
                "Tracks being published",
                sum(
                    len(p.publications)
                    for s in stages
                    for p in (*s.media.publishers.values(), *s.media.shares.values())
                ),
            ),
            (
                "subscribed_tracks",
                "Slots forwarding a track",
                sum(
                    len(p.active)
                    for s in stages
                    for pub in (*s.media.publishers.values(), *s.media.shares.values())
                    for p in pub.publications.values()
                )
                + (self.node.media_workers.active_slots() if self.node.media_workers else 0),
            ),
            ("log_backlog", "Stage events not yet written to the backend", self._backlog()),
            ("relayed_out", "Clients here of stages hosted by other nodes", self._relayed("fronted")),
            ("relayed_in", "Clients on other nodes of stages hosted here", self._relayed("remotes")),
            (
                "nodes",
                "Live nodes this node knows of, itself included (joined.nodes)",
                len(self.node.cluster.node_urls),
            ),
        ):
            gauge = GaugeMetricFamily(f"medstage_{name}", help_)
            gauge.add_metric([], value)
            yield gauge
        by_level = GaugeMetricFamily(
            "medstage_participants_by_quality",
            "Participants present by the connection quality the node measured (unknown: not yet)",
            labels=["level"],
        )
        levels = dict.fromkeys(("excellent", "good", "poor", "lost", "unknown"), 0)
        for live in stages:
            for person in live.stage.participants.values():
                levels[person.quality or "unknown"] += 1
        for level, count in levels.items():
            by_level.add_metric([level], count)
        yield by_level
        pool = self.node.media_workers
        if pool is not None:
            per_worker = GaugeMetricFamily(
                "medstage_media_worker_viewers",
                "Viewers' receiving connections held by each media worker (0 while it restarts)",
                labels=["worker"],
            )
            for index, worker in enumerate(pool.links):
                per_worker.add_metric([str(index)], worker.load if worker is not None else 0)
            yield per_worker

    def _backlog(self) -> int:
        return sum(log.backlog for log in self.node.cluster.logs.values())

    def _relayed(self, side: str) -> int:
        relay = self.node.cluster.relay
        return 0 if relay is None else len(getattr(relay, side))


_collector: _NodeCollector | None = None


def bind(node: Node) -> None:
    global _collector
    if _collector is not None:
        metrics.REGISTRY.unregister(_collector)
    _collector = _NodeCollector(node)
    metrics.REGISTRY.register(_collector)
