"""measure_transfer: chunk throughput of the real depot and the real pull loop through a given broker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from edged.errors import TransportError
from edged.fleet.depot.catalog import ReleaseCatalog
from edged.fleet.depot.depot import Depot
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import MAX_CHUNK_SIZE, Artifact, ReleaseManifest
from edged.fleet.messages import PullRequest
from edged.fleet.device.partial import PartialDownload
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.transfer import ChunkInbox, ChunkTransfer
from edged.fleet.trust import utc_now
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.topics import DeviceTopics, pull_topic

CONNECT_TIMEOUT_S = 15.0
WRITE_BLOCK = 4 * 1024 * 1024


def measure_transfer(mqtt_url: str, chunk_size: int, size_bytes: int, *, workers: int = 2,
                     settings: UpdateSettings | None = None) -> dict[str, Any]:
    """Sign a release of ``size_bytes`` random bytes, serve it with a ``Depot`` and pull it with a
    ``ChunkTransfer`` (both in this process, each with its own broker connection) into a temp dir.

    Returns bytes, seconds (first request to the last chunk durable on disk, hash check excluded),
    MB/s (10^6 bytes) and the transfer counters. Topics use a random prefix, so a broker that
    serves a real fleet is not disturbed.
    """
    prefix = f"edged-bench-{os.urandom(4).hex()}"
    mqtt = MqttSettings(url=mqtt_url, topic_prefix=prefix, max_inflight=100)
    with tempfile.TemporaryDirectory(prefix="edged-transfer-") as temp:
        root = Path(temp)
        keys = OperatorKeys.create(root / "keys", root_keys=1, root_threshold=1, release_keys=1,
                                   release_threshold=1, expires=utc_now() + timedelta(days=1))
        artifact = _random_model(root / "models" / "bench.gguf", size_bytes)
        manifest = ReleaseManifest(fleet="bench", channel="bench", version=1, expires=utc_now() + timedelta(days=1),
                                   artifacts=[artifact], chunk_size=chunk_size)
        keys.sign_release(manifest)
        catalog = ReleaseCatalog(root / "keys", root / "models")
        catalog.lookup("bench", 1, artifact.name)  # hash the file now, not during the measurement
        depot = Depot(mqtt, catalog, share_group=None, workers=workers)
        depot.start()
        try:
            device_dir = root / "device"
            device_dir.mkdir()
            result = asyncio.run(_pull(mqtt, settings or UpdateSettings(), device_dir, artifact, chunk_size))
        finally:
            depot.stop()
    seconds = result.pop("seconds")
    return {"chunk_size": chunk_size, "bytes": size_bytes, "seconds": round(seconds, 3),
            "mb_per_s": round(size_bytes / seconds / 1e6, 1), **result}


def _random_model(path: Path, size: int) -> Artifact:
    path.parent.mkdir(parents=True)
    digest = hashlib.sha256()
    with path.open("wb") as model:
        written = 0
        while written < size:
            block = (b"GGUF" if written == 0 else b"") + os.urandom(min(WRITE_BLOCK, size - written))
            block = block[: size - written]
            model.write(block)
            digest.update(block)
            written += len(block)
    return Artifact(name=path.name, size=size, sha256=digest.hexdigest(), format="gguf")


async def _pull(mqtt: MqttSettings, settings: UpdateSettings, directory: Path, artifact: Artifact,
                chunk_size: int) -> dict[str, Any]:
    device_id = "bench-device"
    topics = DeviceTopics(mqtt.topic_prefix, device_id)
    link = MqttLink(mqtt, client_id=f"edged-bench-{os.urandom(4).hex()}")
    inbox = ChunkInbox(link.inbox(asyncio.get_running_loop(), 4096), 2 * settings.window_bytes + MAX_CHUNK_SIZE)
    link.subscribe(topics.update_chunks, 1, inbox)
    link.start()
    try:
        end = time.monotonic() + CONNECT_TIMEOUT_S
        while not link.is_connected:
            if time.monotonic() > end:
                raise TransportError(f"no connection to {mqtt.broker_url().redacted()}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let the SUBACKs of both clients land before the first request
        partial = PartialDownload(directory, artifact, chunk_size, "0" * 64)
        partial.open()

        def send(request: PullRequest) -> None:
            link.publish(pull_topic(mqtt.topic_prefix, device_id), request.encode(), qos=1)

        transfer = ChunkTransfer(partial, "bench", 1, settings, send, lambda: None, lambda *_: None)

        started = time.monotonic()
        stats = await transfer.run(inbox.get)
        seconds = time.monotonic() - started
        partial.verify()
        partial.close()
    finally:
        await asyncio.to_thread(link.stop)
    return {"seconds": seconds, **stats.as_dict()}
