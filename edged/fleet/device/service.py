"""UpdateService: the device side of signed model updates over MQTT, started by the daemon when [updates] is set."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Final

import structlog

from edged import testing
from edged.engines import create_engine
from edged.errors import AlreadyAccepted, UnverifiedOffer, UpdateError
from edged.fleet.device.install_policy import InstallGate, InstallPolicy, system_local_now
from edged.fleet.device.journal import BEFORE_SWITCH, TERMINAL, Journal, UpdateRecord, payload_sha256
from edged.fleet.manifest import MAX_CHUNK_SIZE, ReleaseManifest, ReleaseVerifier
from edged.fleet.messages import PullRequest
from edged.fleet.device.release_files import slot_entry
from edged.fleet.device.reports import StateReporter
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.slots import Slots
from edged.fleet.device.transfer import ChunkInbox
from edged.fleet.trust import TrustStore
from edged.fleet.device.updater import Updater
from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.inbound import InboundMessage
from edged.ports import ModelCorePort, UpdateControlPort
from edged.ratelog import RejectSummary
from edged.topics import DeviceTopics, channel_offer_topic, group_offer_topic, pull_topic

logger = structlog.get_logger(__name__)

OFFER_INBOX: Final = 16
CANCELLABLE: Final = frozenset({"verified", "downloading"})


class UpdateService(MqttFeature):
    """Listens for offers, verifies them, runs one update at a time and reports on ``update/state``.

    A newer offer supersedes a download in progress; from ``downloaded`` on, the running update
    finishes first. A download that ran out of retries is tried again after ``retry_after_s``, when
    the same manifest is offered again, or after a restart.
    """

    name = "mqtt-updates"

    def __init__(self, settings: UpdateSettings, state_dir: Path, device_id: str, topics: DeviceTopics,
                 core: ModelCorePort, control: UpdateControlPort) -> None:
        super().__init__()
        self.settings = settings
        self.device_id = device_id
        self.topics = topics
        self.core = core
        self.control = control
        self.journal = Journal(state_dir)
        self.slots = Slots(state_dir)
        self.verifier = ReleaseVerifier(TrustStore(state_dir, settings.expiry_clock()), settings.membership(device_id),
                                        settings.limits())
        self._pull_topic = pull_topic(topics.prefix, device_id)
        self._pause_at = testing.update_pause_step()  # the test hooks of the device side
        self.install_gate = InstallGate(InstallPolicy.from_settings(settings), control.install_state,
                                        testing.install_clock() or system_local_now)
        self.engine_factory = create_engine  # how a slot's file or directory becomes an engine (tests swap in a fake)
        self._report: StateReporter | None = None  # built at start(): it publishes on the link
        self._wake = asyncio.Event()
        self._next: tuple[ReleaseManifest, bytes] | None = None
        self._updater: Updater | None = None
        self._running: str | None = None  # payload hash of the update being run
        self._worker: asyncio.Task[None] | None = None
        self._retry_at: float | None = None
        self._clock_recheck: asyncio.TimerHandle | None = None
        self.unverified_offers = 0  # refused before a signature verified: counted, never reported
        self._junk_log = RejectSummary("update offer unverified", logger)
        self._rejected_log = RejectSummary("update offer rejected", logger, level="warning")
        self._chunks: ChunkInbox | None = None

    @property
    def report(self) -> StateReporter:
        if self._report is None:
            raise RuntimeError("the update service is not started")
        return self._report

    def offer_topics(self) -> list[str]:
        prefix, fleet = self.topics.prefix, self.settings.fleet
        return [self.topics.update_offer, *(channel_offer_topic(prefix, fleet, c) for c in self.settings.channels),
                *(group_offer_topic(prefix, fleet, g) for g in self.settings.groups)]

    async def start(self, link: LinkPort) -> None:
        """Subscribe (the link sends them on connect) and resume an interrupted update in the background."""
        await super().start(link)
        self._report = StateReporter(link, self.topics.update_state, self.device_id, self.slots,
                                     self.control.configured_model, self.settings.progress_interval_s)
        self.subscribe(self.offer_topics(), 1, OFFER_INBOX, self._offer_from_mqtt)
        chunk_bytes = 2 * self.settings.window_bytes + MAX_CHUNK_SIZE
        self._chunks = ChunkInbox(self.inbox(4096, max_bytes=chunk_bytes), chunk_bytes)
        link.subscribe(self.topics.update_chunks, 1, self._chunks)
        self.spawn(self._updates_forever(), "update-worker")
        if self._pause_at:
            logger.warning("update test pause enabled", step=self._pause_at)
        logger.info("update service started", offers=self.offer_topics())

    async def stop(self) -> None:
        if self._clock_recheck is not None:
            self._clock_recheck.cancel()
        await super().stop()

    # ---- offers ------------------------------------------------------------------------------
    async def _offer_from_mqtt(self, message: InboundMessage) -> None:
        await self.handle_offer(message.payload)

    async def handle_offer(self, envelope: bytes) -> None:
        """Verify (in the brief's order; the version is persisted before anything is downloaded) and queue."""
        if not envelope:
            return  # an operator cleared a retained offer
        try:
            manifest = await asyncio.to_thread(self.verifier.verify, envelope)
        except AlreadyAccepted as seen:
            self._seen_again(seen.manifest, envelope)
            return
        except UnverifiedOffer as exc:  # anyone can publish junk: it must not replace the retained state
            self.unverified_offers += 1
            self._junk_log.note(exc.reason, error=str(exc)[:200], total=self.unverified_offers)
            return
        except UpdateError as exc:
            self._rejected_log.note(exc.reason, error=str(exc))  # old signed offers can be replayed at will
            self.report("rejected", None, reason=exc.reason, detail=str(exc))
            if exc.reason == "clock":  # nothing was persisted: look again once NTP may have synced
                self._recheck_later(envelope)
            return
        self._queue(manifest, envelope)

    def _recheck_later(self, envelope: bytes) -> None:
        if self._clock_recheck is not None:
            self._clock_recheck.cancel()  # only the latest offer waiting for the clock matters
        self._clock_recheck = asyncio.get_running_loop().call_later(
            self.settings.retry_after_s, lambda: self.spawn(self.handle_offer(envelope), "update-offer-recheck"))

    def _seen_again(self, manifest: ReleaseManifest, envelope: bytes) -> None:
        """The latest accepted manifest once more (a retained offer after a reconnect): usually nothing to do."""
        state = self.journal.load()
        digest = payload_sha256(envelope)
        if digest in (self._running, self._next and payload_sha256(self._next[1])):
            return  # accepted moments ago and not journaled yet: it is running or queued already
        if state.channels.get(manifest.channel) != digest:
            # Accepted, but the crash came before the journal knew it: start it now.
            logger.info("update accepted not journaled", channel=manifest.channel, version=manifest.version)
            self._queue(manifest, envelope)
        elif (state.update is not None and state.update.payload_sha256 == digest
              and state.update.step not in TERMINAL and self._updater is None):
            self._retry_at = time.monotonic()  # offered again while a failed download waits: retry now
            self._wake.set()

    def _queue(self, manifest: ReleaseManifest, envelope: bytes) -> None:
        self._next = (manifest, envelope)
        superseded = self._updater is not None and (self._updater.step in CANCELLABLE
                                                  or self.install_gate.waiting is not None)
        if superseded and self._worker is not None:  # a deferred install has not touched the active model
            logger.info("update superseded", channel=manifest.channel, version=manifest.version)
            self._worker.cancel()
        self._wake.set()

    # ---- the one update at a time -----------------------------------------------------------
    async def _updates_forever(self) -> None:
        # The daemon starts the link right after start(): QoS 1 reports made before it connects are queued.
        self.report.last_outcome(self.journal)
        while True:
            job = self._take_next() or await asyncio.to_thread(self._resumable)
            if job is None:
                timeout = None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
                continue
            self._retry_at = None
            self._worker = asyncio.create_task(self._run(*job), name="update-run")
            try:
                await self._worker
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the service itself is stopping; a superseded update just ends
            finally:
                self._updater = None
                self._worker = None

    def _take_next(self) -> tuple[ReleaseManifest, bytes, UpdateRecord | None] | None:
        if self._next is None:
            return None
        manifest, envelope = self._next
        self._next = None
        return manifest, envelope, None

    def _resumable(self) -> tuple[ReleaseManifest, bytes, UpdateRecord | None] | None:
        """The journaled update, if it is unfinished and due (after a restart or a retry delay)."""
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return None
        record = self.journal.load().update
        if record is None or record.step not in BEFORE_SWITCH:
            return None
        try:
            envelope = self.journal.manifest()
            manifest = self.verifier.recheck_accepted(envelope)
        except (OSError, UpdateError) as exc:
            reason = exc.reason if isinstance(exc, UpdateError) else "state"
            failed = record.at("failed", reason, f"cannot resume: {exc}"[:300])
            self.journal.record(failed)
            self.report("failed", failed, reason=reason, detail=failed.detail)
            return None
        return manifest, envelope, record

    async def _run(self, manifest: ReleaseManifest, envelope: bytes, record: UpdateRecord | None) -> None:
        self._running = payload_sha256(envelope)
        failure: tuple[str, str] | None = None
        try:
            if record is None:
                await self._pause("verified")
                record = self._begin(manifest, envelope)
            self._updater = Updater(self.settings, self.journal, self.slots, self.core, self.report,
                                    self.report.progress, self._pause, self.engine_factory,
                                    lambda held: self.install_gate.wait(held, self.report))
            await self._updater.run(manifest, record, self._send_pull, self._receive_chunk, self._gate)
        except UpdateError as exc:
            failure = (exc.reason, str(exc))
        except OSError as exc:  # a full or failing disk: the journal still says where to resume
            failure = ("disk", f"{exc.strerror or exc}")
        except Exception:
            logger.exception("update failed unexpectedly")
            failure = ("internal", "unexpected error; see the daemon log")
        finally:
            # Before the report: a repeated offer seen after it may resume at once.
            self._updater = None
            self._running = None
        if failure is not None:
            self._retry_later(*failure)

    def _retry_later(self, reason: str, detail: str) -> None:
        self._retry_at = time.monotonic() + self.settings.retry_after_s
        logger.warning("update interrupted", reason=reason, error=detail, retry_in_s=self.settings.retry_after_s)
        self.report("failed", self.journal.load().update, reason=reason, detail=detail)

    def _begin(self, manifest: ReleaseManifest, envelope: bytes) -> UpdateRecord:
        pointer = self.slots.read_pointer()
        serving = self.slots.model_path(pointer) if pointer is not None else self.control.configured_model
        artifact = slot_entry(manifest.artifacts)  # the GGUF file, or the ONNX directory as a whole
        record = UpdateRecord(channel=manifest.channel, version=manifest.version,
                              payload_sha256=payload_sha256(envelope), artifact=artifact,
                              chunk_size=manifest.chunk_size, slot=self.slots.inactive(pointer), previous=pointer,
                              previous_model=str(serving), step="verified")
        self.journal.begin(record, envelope)
        return record

    async def _pause(self, step: str) -> None:
        if step == self._pause_at:
            await testing.pause_forever(step)

    # ---- the pull channel ---------------------------------------------------------------------
    def _send_pull(self, request: PullRequest) -> None:
        self.link.publish(self._pull_topic, request.encode(), qos=1)

    async def _receive_chunk(self) -> bytes:
        assert self._chunks is not None
        return await self._chunks.get()

    def _gate(self) -> str | None:
        if not self.link.is_connected:
            return "offline"
        if not self.control.downloads_allowed():
            return "profile"
        return None
