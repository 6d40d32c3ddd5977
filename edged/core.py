"""Admission, the priority queue, deadlines and cancellation: every request from every transport passes here."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from edged.config import RequestLimits
from edged.ratelimit import RateLimiter
from edged.engines.base import EngineSettings, SamplingParams
from edged.engines.worker import ModelWorker
from edged.errors import BadRequest, Busy, Cancelled, DeadlineExceeded, EngineError, InternalError, RequestError
from edged.events import Events
from edged.job import Job, Pacer
from edged.messages import ChatRequest, ErrorEvent, FinalEvent
from edged.structured.shaper import Shaper, plan_for
from edged.summary import RequestSummary

if TYPE_CHECKING:
    from edged.power.profiles import Profile

logger = structlog.get_logger(__name__)

CORE_FAILED = "the request core has failed; edged is restarting, retry shortly"


class EnergyAccounting(Protocol):
    def begin(self) -> Any: ...
    def end(self, handle: Any) -> Any: ...  # has .joules and .source


def engine_settings(profile: "Profile") -> EngineSettings:
    e = profile.engine
    return EngineSettings(threads=e.threads, batch=e.batch, context=e.context, kv_cache_type=e.kv_cache_type,
                          mmap=e.mmap, mlock=e.mlock)


class Core:
    """Admits requests, orders them by priority, runs one at a time on the model worker."""

    def __init__(self, worker: ModelWorker, profile: "Profile", limits: RequestLimits,
                 energy: EnergyAccounting, events: Events | None = None) -> None:
        self._worker = worker
        self.profile = profile
        self._limits = limits
        self._energy = energy
        self._pacer = Pacer(profile.pace)
        self._queue: list[Job] = []
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._running: Job | None = None
        self._accepting = True
        self._dispatcher: asyncio.Task[None] | None = None
        # Held while a request runs and while the model is swapped: a swap waits for the running
        # request, and queued requests wait for the swap, then run on the new model.
        self._model_lock = asyncio.Lock()
        self._last_activity = time.monotonic()
        self.events = events or Events()  # request_finished, request_rejected, profile_changed
        self.failure: BaseException | None = None  # why the dispatcher ended, if it ever does
        self.counts: dict[str, int] = {}
        self._rate = RateLimiter()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._worker.load(engine_settings(self.profile))
        except EngineError as exc:
            # Keep serving: requests get model_unavailable and status says why, instead of a crash loop.
            logger.error("model failed to load", error=str(exc))
        self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="core-dispatch")
        self._dispatcher.add_done_callback(self._dispatcher_ended)

    def _dispatcher_ended(self, task: "asyncio.Task[None]") -> None:
        # Without a dispatcher every admitted request would only time out: refuse new ones; the
        # daemon's watchdog sees `alive` go False, stops feeding systemd and exits for a restart.
        if task.cancelled():
            return
        self.failure = task.exception() or RuntimeError("the dispatcher returned")
        self._accepting = False
        logger.critical("request dispatcher ended; refusing new requests", error=repr(self.failure))
        waiting, self._queue = self._queue, []
        for job in waiting:  # answered now rather than by their deadline timers
            job.cancel("core failed")
            self._finish_error(job, InternalError(CORE_FAILED))

    @property
    def alive(self) -> bool:
        """False once the dispatcher has ended by itself (a bug); requests can no longer be served."""
        return self.failure is None

    async def drain(self, timeout: float) -> int:
        """Wait for queued and running requests up to `timeout`, then cancel the rest; returns how many."""
        self._accepting = False
        end = time.monotonic() + timeout
        while (self._queue or self._running) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        left = [*self._queue, *([self._running] if self._running else [])]
        for job in left:
            job.cancel("shutdown")
            if not job.started:
                self._finish_error(job, Cancelled("the daemon is stopping"))
        self._queue.clear()
        if left:
            logger.warning("cancelled in-flight requests, drain timeout exceeded", count=len(left))
        while self._running:
            await asyncio.sleep(0.01)
        return len(left)

    async def stop(self) -> None:
        if self._dispatcher:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self._worker.unload()
        self._worker.shutdown()

    # ---- admission -------------------------------------------------------------------------
    def submit(self, request: ChatRequest, *, transport: str, peer: str, client: str | None = None,
               request_id: str | None = None) -> Job:
        """Admit a request or raise at once (Busy, BadRequest); never waits."""
        admission = self.profile.admission
        if self.failure is not None:
            raise self._reject(InternalError(CORE_FAILED))
        if not self._accepting:
            raise self._reject(Busy("the daemon is stopping; retry on another device or later"))
        if request.priority not in admission.priorities:
            raise self._reject(Busy(f"profile {self.profile.name!r} admits only {', '.join(admission.priorities)}"))
        if admission.requests_per_minute and not self._rate.allow(
                (client or peer).encode(), admission.requests_per_minute, time.monotonic()):
            raise self._reject(Busy(f"over the {admission.requests_per_minute} requests/minute that profile "
                                    f"{self.profile.name!r} allows per client; retry later"))
        if len(self._queue) >= admission.queue_length:
            raise self._reject(Busy(f"queue full ({admission.queue_length} waiting); retry later"))
        if request.prompt_chars() > self._limits.max_prompt_chars:
            raise self._reject(BadRequest(f"prompt longer than {self._limits.max_prompt_chars} characters"))
        deadline_ms = min(request.deadline_ms or self._limits.default_deadline_ms, self._limits.max_deadline_ms)
        job = Job(request_id=request_id or os.urandom(8).hex(), request=request, transport=transport, peer=peer,
                  client=client, deadline=time.monotonic() + deadline_ms / 1000, order=next(self._order))
        heapq.heappush(self._queue, job)
        asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + deadline_ms / 1000, self._expire, job)
        self._wakeup.set()
        return job

    def _reject(self, error: RequestError) -> RequestError:
        self.counts[f"rejected_{error.code}"] = self.counts.get(f"rejected_{error.code}", 0) + 1
        self.events.request_rejected.emit(error.code)
        return error

    def _expire(self, job: Job) -> None:
        if job.finished:
            return
        job.cancel("deadline")
        if not job.started:
            if job in self._queue:  # else the dispatcher holds it, waiting for a model swap to end
                self._queue.remove(job)
                heapq.heapify(self._queue)
            self._finish_error(job, DeadlineExceeded("deadline passed while queued"))

    # ---- profiles --------------------------------------------------------------------------
    def set_profile(self, profile: "Profile", reason: str) -> None:
        """Pace applies at the next token; engine changes wait until the model is idle (dispatcher)."""
        old = self.profile
        self.profile = profile
        self._pacer.set(profile.pace)
        self._wakeup.set()
        logger.info("profile changed", profile=profile.name, previous=old.name, reason=reason)
        self.events.profile_changed.emit(profile.name, reason)

    # ---- the dispatcher ----------------------------------------------------------------------
    async def _dispatch_forever(self) -> None:
        while True:
            await self._apply_engine_settings()
            if not self._queue:
                self._wakeup.clear()
                idle_after = self.profile.idle.unload_after_s
                try:
                    timeout = None if idle_after is None or not self._worker.loaded else max(
                        0.0, self._last_activity + idle_after - time.monotonic())
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    logger.info("unloading idle model", idle_s=idle_after)
                    await self._worker.unload(idle=True)
                continue
            job = heapq.heappop(self._queue)
            if job.finished:
                continue
            self._running = job
            try:
                async with self._model_lock:
                    if not job.finished:  # it may have expired while a model swap held the lock
                        await self._run(job)
            except Exception:  # the dispatcher must survive anything one request does
                logger.exception("request failed unexpectedly", request_id=job.request_id)
                self._finish_error(job, InternalError("internal error; see the daemon log"))
            finally:
                self._running = None
                self._last_activity = time.monotonic()

    async def _apply_engine_settings(self) -> None:
        async with self._model_lock:  # never while a model swap is loading the new engine
            wanted = engine_settings(self.profile)
            reload = self._worker.loaded and self._worker.settings != wanted
            if reload:
                logger.info("reloading model for profile", profile=self.profile.name)
                await self._worker.unload()
            # A model in use is loaded again at once (with its prefix state), so the next request does not
            # wait for it; an unloaded one (idle, or never needed) waits for a request.
            if not self._worker.loaded and (self._queue or reload):
                try:
                    await self._worker.load(wanted)
                except EngineError as exc:
                    logger.error("model failed to load", error=str(exc))

    async def _run(self, job: Job) -> None:
        job.started = True
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        req = job.request
        try:
            shaper = Shaper(plan_for(req))  # JSON and tool answers: grammar, shaping, validation
        except RequestError as exc:
            self._finish_error(job, exc)
            return
        plan = shaper.plan
        params = SamplingParams(max_tokens=min(req.max_tokens or self.profile.engine.max_tokens,
                                               self.profile.engine.max_tokens),
                                temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                                stop=plan.engine_stops(), grammar=plan.grammar, tools=plan.prompt_tools)
        pacer, flag, deadline = self._pacer, job.cancel_flag, job.deadline
        streaming = req.stream
        last = [time.monotonic()]

        def sink(text: str) -> bool:
            if flag.is_set():
                return False
            now = time.monotonic()
            if now > deadline:
                job.cancel("deadline")
                return False
            for event in shaper.feed(text):
                if streaming:
                    loop.call_soon_threadsafe(job.push, event)
            if pacer.active:
                pause = pacer.pause_after(now - last[0])
                if pause > 0 and flag.wait(pause):
                    return False
                last[0] = time.monotonic()
            else:
                last[0] = now
            return True

        energy_handle = self._energy.begin()
        try:
            result = await self._worker.generate(req.messages, req.prompt, params, sink)
        except RequestError as exc:
            self._energy.end(energy_handle)
            self._finish_error(job, exc)
            return
        except EngineError as exc:
            self._energy.end(energy_handle)
            self._finish_error(job, InternalError(str(exc)))
            return
        energy = self._energy.end(energy_handle)
        if result.completion_tokens and energy.joules > 0:
            self._pacer.joules_per_token = energy.joules / result.completion_tokens
        if result.finish_reason == "cancelled" or job.cancel_reason:
            ended_by = DeadlineExceeded if job.cancel_reason == "deadline" else Cancelled
            self._finish_error(job, ended_by(f"request {job.cancel_reason or 'cancelled'}"), result=result)
            return
        try:
            outcome = shaper.finish(result.finish_reason)
        except RequestError as exc:
            self._finish_error(job, exc, result=result)
            return
        for event in outcome.tail if streaming else ():
            job.push(event)
        ended = time.monotonic()
        summary = self._summary(
            job, "ok", finish_reason=outcome.finish_reason, input_tokens=result.prompt_tokens,
            output_tokens=result.completion_tokens, cached_input_tokens=result.cached_prompt_tokens,
            queue_time_ms=(started - job.submitted) * 1000,
            time_to_first_token_ms=(started - job.submitted + result.prompt_s) * 1000,
            duration_ms=(ended - job.submitted) * 1000,
            decode_tokens_per_s=(result.completion_tokens - 1) / result.decode_s
            if result.decode_s > 0 and result.completion_tokens > 1 else 0.0,
            energy_j=energy.joules, energy_source=energy.source,
            energy_scope=getattr(energy, "scope", energy.source))
        job.push(FinalEvent(summary, text=outcome.content or "", tool_calls=outcome.tool_calls))
        self._finished(summary)

    def _finish_error(self, job: Job, error: RequestError, result: Any = None) -> None:
        code = error.code
        job.push(ErrorEvent(code=code, message=error.message))
        self._finished(self._summary(
            job, code, input_tokens=result.prompt_tokens if result else 0,
            output_tokens=result.completion_tokens if result else 0,
            duration_ms=(time.monotonic() - job.submitted) * 1000))

    def _summary(self, job: Job, outcome: str, **measured: Any) -> RequestSummary:
        return RequestSummary(request_id=job.request_id, transport=job.transport, peer=job.peer, client=job.client,
                              priority=job.request.priority, profile=self.profile.name, outcome=outcome, **measured)

    def _finished(self, summary: RequestSummary) -> None:
        self.counts[summary.outcome] = self.counts.get(summary.outcome, 0) + 1
        logger.info("request", **summary.log_fields())
        self.events.request_finished.emit(summary)

    async def swap_engine(self, engine: Any) -> Any:
        """Put a new engine in place once the running request (if any) has finished; returns its ModelInfo.

        Raises EngineError when the new model does not load; the worker is then without a model
        and the caller swaps the previous engine back.
        """
        async with self._model_lock:
            return await self._worker.replace_engine(engine, engine_settings(self.profile))

    # ---- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        info = self._worker.info
        return {
            "model": None if info is None else {"name": info.name, "path": info.path, "format": info.format,
                                                "context": info.context, "threads": info.threads},
            "model_error": self._worker.load_error,
            "profile": self.profile.name,
            "queue": {"waiting": len(self._queue), "running": 1 if self._running else 0,
                      "capacity": self.profile.admission.queue_length},
            "requests": dict(self.counts),
        }
