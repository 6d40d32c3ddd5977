"""The one security path for every transport: open sealed requests, answer with sealed chunks."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from edged.crypto.allowlist import AllowList
from edged.ratelimit import RateLimiter
from edged.crypto.clock import ClockGuard
from edged.crypto.envelope import OpenedRequest, open_request
from edged.crypto.keys import DeviceIdentity, PrekeyRing
from edged.crypto.padding import pad_json
from edged.crypto.replay import ReplayCache
from edged.crypto.response import ResponseSealer
from edged.crypto.settings import E2ESettings
from edged.errors import Busy, ClockNotSynchronised, EnvelopeRejected
from edged.messages import ChatRequest, parse_request
from edged.ratelog import RejectSummary, StepGuard

if TYPE_CHECKING:
    from edged.ports import ExchangePort

logger = structlog.get_logger(__name__)

# Response chunks are padded to powers of two from here when padding is on: token-sized chunks all
# look alike to the broker.
CHUNK_MIN_BUCKET = 128
# One client may hold at most this fraction (1/n) of the replay cache, so it cannot lock others out.
REPLAY_SHARES = 8


@dataclass
class SealedExchange:
    """One admitted sealed request: who sent it, where the answer goes, and how to seal it."""

    opened: OpenedRequest
    sealer: ResponseSealer
    pad: bool

    @property
    def request_id(self) -> str:
        return self.opened.req_id.hex()

    @property
    def client_label(self) -> str:
        return self.opened.client_label

    @property
    def resp_topic(self) -> str:
        return self.opened.resp_topic

    def parse(self) -> ChatRequest:
        """The request body; BadRequest is answered sealed, since the client is authenticated."""
        return parse_request(self.opened.body)

    def seal(self, obj: dict[str, Any], *, final: bool, error: bool = False) -> bytes:
        data = (pad_json(obj, min_bucket=CHUNK_MIN_BUCKET) if self.pad
                else json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
        return self.sealer.seal(data, final=final, error=error)


class SealedGateway:
    """Device keys, prekeys, allow-list, replay cache and rate limits behind one `open()`."""

    def __init__(self, settings: E2ESettings, state_dir: Path, device_id: str, pad_responses: bool = False) -> None:
        self.settings = settings
        self.device_id = device_id
        self.identity = DeviceIdentity.load_or_create(state_dir)
        self.prekeys = PrekeyRing(self.identity, device_id, now=time.time(), schedule=settings.prekeys)
        self.allow_list = AllowList.load(settings.clients_file or state_dir / "clients.toml")
        self.replay = ReplayCache(settings.replay_max_entries,
                                  max(1, settings.replay_max_entries // REPLAY_SHARES))
        self.clock = ClockGuard(settings.clock_policy)
        self.rate = RateLimiter()
        self._upkeep = StepGuard("key maintenance step failed", logger)
        self._reject_log = RejectSummary("sealed request rejected", logger)
        self.pad_responses = pad_responses
        self.rejects: dict[str, int] = {}
        self._rejects_lock = threading.Lock()
        logger.info("device identity", fingerprint=self.identity.fingerprint, clients=len(self.allow_list))

    def open(self, data: bytes, request_topic: str) -> SealedExchange:
        """Checks 1-10 of e2e-v1 §3; raises EnvelopeRejected, which is never answered over MQTT."""
        try:
            opened = open_request(
                data, device_id=self.device_id, request_topic=request_topic,
                identity_pub=self.identity.public_bytes, prekeys=self.prekeys, allow_list=self.allow_list,
                replay=self.replay, now=time.time(), window=self.settings.window,
                max_size=self.settings.max_request_bytes,
                clock_synchronised=self.clock.synchronised(time.monotonic()), clock_policy=self.settings.clock_policy,
                within_rate=self._within_rate)
        except ClockNotSynchronised as exc:  # authenticated: the transport answers it, sealed
            self._count(exc.check)
            opened = cast(OpenedRequest, exc.opened)
            self._reject_log.note("clock_not_synchronised", topic=request_topic, client=opened.client_label)
            exc.exchange = SealedExchange(opened, opened.response_sealer(), self.pad_responses)
            raise
        except EnvelopeRejected as exc:
            self._count(exc.check)
            # One line per check and interval, then counts: junk must not become a log flood.
            self._reject_log.note(exc.check, reason=exc.message, topic=request_topic, size=len(data))
            raise
        return SealedExchange(opened, opened.response_sealer(), self.pad_responses)

    def admit(self, exchange: ExchangePort) -> ChatRequest:
        """The client's rate and the request body; the RequestErrors raised here are answered sealed."""
        self.check_rate(exchange)
        return exchange.parse()

    def _within_rate(self, client_pub: bytes, requests_per_minute: int | None) -> bool:
        return self.rate.allow(client_pub, requests_per_minute, time.monotonic())

    def check_rate(self, exchange: ExchangePort) -> None:
        """Busy (answered sealed) if ``open`` found the client over its rate, before its replay entry."""
        opened = exchange.opened
        if opened.rate_limited:
            self._count("rate_limit")
            raise Busy(f"client {opened.client_label!r} is over its {opened.requests_per_minute} requests/minute")

    def may_command(self, exchange: ExchangePort) -> bool:
        client = self.allow_list.lookup(exchange.opened.client_pub, time.time())
        return client is not None and client.commands

    def _count(self, reason: str) -> None:
        with self._rejects_lock:
            self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def prekey_reply(self) -> dict[str, str]:
        return {"device_id": self.device_id, "identity_pub": self.identity.public_bytes.hex(),
                "prekey_record": self.prekeys.current_record().hex()}

    def maintain(self) -> bool:
        """Periodic upkeep: rotate prekeys when due (True: republish), reload a changed allow-list.

        Each step in its own guard: a broken allow-list must not stop prekey rotation.
        """
        self._upkeep.run("allow_list", self.allow_list.reload_if_changed)
        self._upkeep.run("replay_purge", lambda: self.replay.purge(time.time()))
        self._upkeep.run("reject_summary", self._reject_log.flush_if_due)
        return bool(self._upkeep.run("prekey_rotation", lambda: self.prekeys.rotate_if_due(time.time())))
