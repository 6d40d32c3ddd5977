"""The depot: answers devices' pull requests with chunks of signed releases, through a shared subscription."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from typing import Final

import structlog

from edged.errors import UpdateError
from edged.fleet.depot.catalog import ReleaseCatalog
from edged.testing.depot_faults import FaultInjector
from edged.fleet.messages import MAX_PULL_BYTES, PullRequest, encode_chunk, encode_error, parse_pull
from edged.fleet.depot.pull_budget import DeviceBudget
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.publishing import PublishHandle
from edged.mqtt.settings import MqttSettings
from edged.mqtt_limits import PACKET_OVERHEAD
from edged.topics import DeviceTopics, depot_pull_filter, device_of_pull_topic

logger = structlog.get_logger(__name__)

DEFAULT_SHARE_GROUP: Final = "depot"
DEFAULT_WORKERS: Final = 2
REQUEST_QUEUE: Final = 1024  # pull requests waiting for a worker; more are dropped (devices re-request)
MAX_UNACKED: Final = 32  # chunks per worker published and not yet acknowledged by the broker
ACK_WAIT_S: Final = 10.0
WORKER_TICK_S: Final = 0.5


class Depot:
    """Subscribes to ``$share/<group>/<prefix>/+/update/pull``: every depot of one group gets a share.

    The paho thread only parses and queues requests; worker threads read, frame and publish, and
    each waits for broker acknowledgements once ``MAX_UNACKED`` chunks are out, so a slow broker
    slows the depot instead of filling memory.
    """

    def __init__(
        self,
        settings: MqttSettings,
        catalog: ReleaseCatalog,
        *,
        share_group: str | None = DEFAULT_SHARE_GROUP,
        workers: int = DEFAULT_WORKERS,
        client_id: str | None = None,
        faults: FaultInjector | None = None,
        budget: DeviceBudget | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.prefix = settings.topic_prefix
        self.share_group = share_group
        self.faults = faults
        self.budget = budget or DeviceBudget()
        # Pulls are under 1 KiB: nobody on the pull topic can make the depot buffer more than that.
        self.link = MqttLink(settings, client_id=client_id or f"edged-depot-{os.urandom(4).hex()}",
                             max_packet_bytes=MAX_PULL_BYTES + PACKET_OVERHEAD)
        self._requests: queue.Queue[tuple[str, PullRequest]] = queue.Queue(REQUEST_QUEUE)
        self._workers = [
            threading.Thread(target=self._work, name=f"depot-worker-{n}", daemon=True) for n in range(workers)
        ]
        self._stopping = threading.Event()
        self._stats_lock = threading.Lock()
        self.stats: dict[str, int] = {"requests": 0, "chunks": 0, "bytes": 0, "refused": 0, "dropped": 0, "bad": 0,
                                      "throttled": 0}

    def start(self) -> None:
        self.link.subscribe(depot_pull_filter(self.prefix, self.share_group), 1, self._on_pull)
        for worker in self._workers:
            worker.start()
        self.link.start()
        logger.info("depot started", topic_filter=depot_pull_filter(self.prefix, self.share_group),
                    workers=len(self._workers), faults=self.faults.plan.model_dump() if self.faults else None)

    def stop(self) -> None:
        self._stopping.set()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(ACK_WAIT_S)
        self.link.stop()
        self.catalog.close()
        logger.info("depot stopped", **self.snapshot())

    def snapshot(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self.stats)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += amount

    def _on_pull(self, message: InboundMessage) -> None:  # paho's thread: parse and queue only
        device_id = device_of_pull_topic(self.prefix, message.topic)
        try:
            if device_id is None:
                raise UpdateError("malformed", "not a pull topic")
            pull = parse_pull(message.payload)
        except UpdateError:
            self._count("bad")
            return
        try:
            self._requests.put_nowait((device_id, pull))
        except queue.Full:
            self._count("dropped")

    def _work(self) -> None:
        unacked: deque[PublishHandle] = deque()
        while not self._stopping.is_set():
            try:
                device_id, pull = self._requests.get(timeout=WORKER_TICK_S)
            except queue.Empty:
                continue
            try:
                self._serve(device_id, pull, unacked)
            except Exception:  # one bad request must not end the worker
                logger.exception("depot request failed", device_id=device_id)

    def _serve(self, device_id: str, pull: PullRequest, unacked: deque[PublishHandle]) -> None:
        self._count("requests")
        topic = DeviceTopics(self.prefix, device_id).update_chunks
        try:
            served = self.catalog.lookup(pull.channel, pull.version, pull.artifact)
            if pull.first >= served.chunk_count:
                raise UpdateError("unavailable", f"chunk {pull.first} is past the last one")
        except UpdateError as exc:
            self._count("refused")
            frame = encode_error(pull.channel, pull.version, pull.artifact, pull.first, str(exc))
            self._publish(topic, frame, unacked)
            return
        wanted = min(pull.first + pull.count, served.chunk_count) - pull.first
        allowed = self.budget.take(device_id, served.chunk_size, wanted)
        if allowed < wanted:
            self._count("throttled", wanted - allowed)  # not sent: the device asks again after its idle timeout
        for index in range(pull.first, pull.first + allowed):
            data = served.read(index)
            if self.faults is None:
                frames = [encode_chunk(pull.channel, pull.version, pull.artifact, index, data)]
            else:
                frames = self.faults.apply(pull.channel, pull.version, pull.artifact, index, data)
            for frame in frames:
                self._publish(topic, frame, unacked)
            self._count("chunks")
            self._count("bytes", len(data))
        if self.faults is not None:
            for frame in self.faults.flush():
                self._publish(topic, frame, unacked)

    def _publish(self, topic: str, frame: bytes, unacked: deque[PublishHandle]) -> None:
        unacked.append(self.link.publish(topic, frame, qos=1))
        while unacked and (unacked[0].done or len(unacked) > MAX_UNACKED):
            oldest = unacked.popleft()
            if not oldest.done and not oldest.wait(ACK_WAIT_S):
                logger.warning("depot chunk not acknowledged", topic=oldest.topic, failure=oldest.failure)
