"""The daemon's event hub: who listens to what, in one place, with every listener call isolated.

A part announces what happened (``events.request_finished.emit(summary)``); features that care
connect a listener (``events.request_finished.connect(telemetry.on_request)``). A listener that
raises is logged with its name and counted in ``Events.listener_errors``; the emitter never sees
the exception, so a broken feature cannot stop the core from serving (after zigbee2mqtt's event
bus, lib/eventBus.ts). Listeners run on the event loop, synchronously and in connect order: they
must be quick; anything slow (I/O, fsync) goes to a task or a thread the listener starts itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, ParamSpec

import structlog

from edged.errors import EdgedError

if TYPE_CHECKING:
    from edged.summary import RequestSummary

logger = structlog.get_logger(__name__)

P = ParamSpec("P")


def listener_name(listener: Callable[..., object]) -> str:
    """``Class.method`` or ``function`` for logs and counters; never the listener's arguments."""
    owner = getattr(listener, "__self__", None)
    name = getattr(listener, "__qualname__", None) or type(listener).__qualname__
    if owner is not None and "." not in name:
        name = f"{type(owner).__qualname__}.{name}"
    return name


class Signal(Generic[P]):
    """One kind of event; ``emit`` calls every listener and returns normally whatever they do."""

    def __init__(self, name: str, errors: dict[str, int]) -> None:
        self.name = name
        self._errors = errors
        self._listeners: list[tuple[str, Callable[P, object]]] = []

    def connect(self, listener: Callable[P, object], name: str | None = None) -> Callable[P, object]:
        """Add a listener (called after those already connected); returns it, so it can decorate."""
        self._listeners.append((name or listener_name(listener), listener))
        return listener

    def disconnect(self, listener: Callable[P, object]) -> None:
        self._listeners = [(n, fn) for n, fn in self._listeners if fn != listener]

    @property
    def listeners(self) -> list[str]:
        return [name for name, _ in self._listeners]

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Call every listener; returns how many raised (each one logged and counted)."""
        failed = 0
        for name, listener in list(self._listeners):
            try:
                listener(*args, **kwargs)
            except EdgedError as exc:  # an expected refusal (e.g. a bad allow-list on reload): no traceback
                failed += 1
                self._count(name)
                logger.error("event listener refused", signal=self.name, listener=name, error=str(exc))
            except Exception:  # the emitter (the core's dispatcher, the daemon) must keep going
                failed += 1
                self._count(name)
                logger.exception("event listener failed", signal=self.name, listener=name)
        return failed

    def _count(self, listener: str) -> None:
        key = f"{self.name}:{listener}"
        self._errors[key] = self._errors.get(key, 0) + 1


class Events:
    """Every event a daemon part announces. One instance per daemon, built before the parts."""

    def __init__(self) -> None:
        self.listener_errors: dict[str, int] = {}
        errors = self.listener_errors
        # A request ended (answered, failed, cancelled, timed out); the core logged it already.
        self.request_finished: Signal[[RequestSummary]] = Signal("request_finished", errors)
        # Admission refused a request at once; the argument is the wire error code (busy, bad_request).
        self.request_rejected: Signal[[str]] = Signal("request_rejected", errors)
        # The core switched power profile: (new profile name, why).
        self.profile_changed: Signal[[str, str]] = Signal("profile_changed", errors)
        # The device published a new prekey record (e2e-v1 §4); presence republishes it.
        self.prekey_rotated: Signal[[]] = Signal("prekey_rotated", errors)
        # SIGHUP: re-read what can change live (allow-list, profiles). A listener that raises
        # EdgedError keeps its previous settings; the others still reload.
        self.reload: Signal[[]] = Signal("reload", errors)

    def signals(self) -> list[Signal[...]]:
        return [self.request_finished, self.request_rejected, self.profile_changed, self.prekey_rotated,
                self.reload]

    def listeners(self) -> dict[str, list[str]]:
        """Who listens to what, for `edged status` and the docs."""
        return {signal.name: signal.listeners for signal in self.signals()}
