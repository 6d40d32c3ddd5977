"""Run the real `edged.daemon.Daemon` on its own asyncio loop in a thread of the test process.

The same config loading (`edged.cli.serve_config`: the test's arguments and `EDGED_*` variables),
the same lifecycle owner and parts, the same Unix sockets on disk and the real model as
`tests.daemon.DaemonProcess`, without a Python start-up and an import of everything per daemon.
A test gets the same interface (start, wait_ready, status, client, the log to wait on, stop through
the daemon's own drain and stop path, state_dir), so a test changes only its fixture.

What a process has and a thread does not stays with the subprocess harness: signals (here SIGTERM
and SIGHUP become the `request_stop`/`reload` calls the signal handlers make), kill -9, exit codes of
a failed start, the daemon's own RSS, sd_notify (the daemon gets a notifier with no socket) and the
`EDGED_TEST_*` hooks (process-wide variables; this harness refuses them).

Log lines: structlog is configured once for the test process by the product's own
`configure_logging` (JSON), into a router that writes each line to the log file of the daemon it
came from. The daemon is known by a context variable set in its thread; threads the daemon starts
(the model thread, paho's network thread, the power sampler...) inherit it (`_inherit_sink`), as
Python 3.11 threads do not inherit context variables. Lines from elsewhere go to stderr.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from edged.cli import build_parser, serve_config
from edged.config import Config
from edged.daemon import Daemon
from edged.log import configure_logging
from edged.systemd import Notifier
from tests.daemon import DaemonBase
from tests.slowdown import daemon_env, scaled

# Only what the config loader reads: anything else in a test's env would apply to the whole test process.
PROCESS_WIDE = ("EDGED_TEST_",)
LOG_LEVEL = "info"


class LogSink:
    """One daemon's log file; whole lines only, from any of its threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []  # every thread the daemon started, for the leak check

    def write_line(self, line: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


_SINK: contextvars.ContextVar[LogSink | None] = contextvars.ContextVar("edged_test_log_sink", default=None)


class LogRouter:
    """A text stream for structlog: each complete line goes to the current daemon's sink, else stderr."""

    def __init__(self) -> None:
        self._partial = threading.local()  # print() writes the message and the newline separately

    def write(self, text: str) -> int:
        pending: str = getattr(self._partial, "text", "") + text
        *lines, self._partial.text = pending.split("\n")
        sink = _SINK.get()
        for line in lines:
            if sink is not None:
                sink.write_line(line)
            else:
                print(line, file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


_installed = threading.Lock()
_routers: list[LogRouter] = []  # the one router, once installed
_original_thread_start = threading.Thread.start


def _inherit_sink(thread: threading.Thread) -> None:
    """threading.Thread.start, carrying the starter's daemon (log sink) into the new thread."""
    sink = _SINK.get()
    if sink is not None:
        run = thread.run

        def run_with_sink() -> None:
            _SINK.set(sink)
            run()

        thread.run = run_with_sink  # type: ignore[method-assign]
        sink.threads.append(thread)
    _original_thread_start(thread)


def install() -> None:
    """Once per test process: structlog into the router, threads inheriting their starter's sink.
    Configured once only: loggers are cached on first use, and capture_logs() in unit tests edits the
    one processor list in place."""
    with _installed:
        if _routers:
            return
        _routers.append(LogRouter())
        configure_logging(LOG_LEVEL, "json", log_prompts=False, stream=_routers[0])
        threading.Thread.start = _inherit_sink  # type: ignore[method-assign]


class InProcessDaemon(DaemonBase):
    """The daemon on a thread of this process, with the interface of tests.daemon.DaemonProcess."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, *args, env=env)
        refused = sorted(key for key in env or {} if not key.startswith("EDGED_") or key.startswith(PROCESS_WIDE))
        if refused:
            raise AssertionError(f"{refused} act on the whole process: use the subprocess harness (make_daemon)")
        self.env = {**os.environ, **daemon_env(), **(env or {})}
        self.instance: Daemon | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._code: int | None = None
        self._running = threading.Event()
        self._sink: LogSink | None = None

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> "InProcessDaemon":
        assert self._thread is None or not self._thread.is_alive(), "already running"
        argv = ["serve", "--socket", str(self.socket), "--state-dir", str(self.state_dir), *self.args]
        config = serve_config(build_parser(with_groups=False).parse_args(argv), environ=self.env)
        if config.log.level != LOG_LEVEL or config.log.log_prompts or config.log.format == "console":
            raise AssertionError("the in-process harness logs JSON at info without prompts; "
                                 "use the subprocess harness (make_daemon) for other [log] settings")
        install()
        self._started_at_line = len(self.log_lines())
        self._code, self.instance = None, None
        self._running.clear()
        sink = self._sink = LogSink(self.log_path)
        self._thread = threading.Thread(target=self._main, args=(config, sink), daemon=True,
                                        name=f"edged-daemon-{self.workdir.name}")
        self._thread.start()
        if not self._running.wait(scaled(timeout)):
            raise AssertionError(f"the daemon's loop did not start within {timeout}s")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def _main(self, config: Config, sink: LogSink) -> None:
        _SINK.set(sink)
        try:
            self._code = asyncio.run(self._serve(config))
        except BaseException:  # a subprocess would print this traceback into its log and exit 1
            for line in traceback.format_exc().splitlines():
                sink.write_line(line)
            self._code = 1
        finally:
            self._running.set()  # also when the loop never came up: start() must not wait for it

    async def _serve(self, config: Config) -> int:
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()  # calls from the test thread run as the daemon's
        self.instance = Daemon(config, notifier=Notifier(environ={}))
        self._running.set()
        return await self.instance.serve()

    def returncode(self) -> int | None:
        if self._thread is None or self._thread.is_alive():
            return None
        return self._code

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        assert self._loop is not None and self._context is not None, "the daemon was never started"
        if self.alive():
            self._loop.call_soon_threadsafe(fn, *args, context=self._context)

    def send_signal(self, sig: int) -> None:
        """What the daemon's handler for `sig` does: SIGTERM stops (drain, then stop), SIGHUP reloads."""
        assert self.instance is not None, "the daemon was never started"
        if sig == signal.SIGTERM:
            self._call(self.instance.request_stop, "SIGTERM")
        elif sig == signal.SIGHUP:
            self._call(self.instance.reload)
        else:
            raise AssertionError(f"signal {sig} needs a process: use the subprocess harness (make_daemon)")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """The daemon's clean shutdown; its exit code. Fails when a thread it started outlives it or
        the model was not closed (a long test run would grow by a model per daemon)."""
        assert self._thread is not None, "the daemon was never started"
        if self._thread.is_alive():
            self.send_signal(sig)
        self._thread.join(scaled(timeout))
        if self._thread.is_alive():
            raise AssertionError(f"edged did not stop within {timeout}s:\n{self.log_tail()}")
        self._check_freed()
        assert self._code is not None
        return self._code

    def kill(self) -> None:
        """Teardown: there is no kill -9 for a thread, so the clean stop (a hang fails the test)."""
        if self._thread is not None and self._thread.is_alive():
            self.stop()

    def _check_freed(self) -> None:
        worker = getattr(self.instance, "worker", None)
        if worker is not None:
            assert not worker.loaded, f"the model is still loaded after stop:\n{self.log_tail()}"
        threads = [] if self._sink is None else self._sink.threads
        for thread in threads:
            thread.join(scaled(5))  # one that is ending its last step
        left = [thread.name for thread in threads if thread.is_alive()]
        assert not left, f"threads of the stopped daemon still run: {left}"
