"""The daemon's parts, built from its config and plugged into the event hub and the control port.

`Daemon._start` (edged/daemon.py) is the lifecycle: it calls these in dependency order, then starts,
awaits and stops what they return. These functions only build: none binds a socket, starts a thread
or a task. Optional parts are imported inside their function, so `edged serve` imports only what
its config runs (h11, wyoming, paho).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edged.config import Config, SocketConfig
from edged.control import DeviceControl
from edged.core import Core
from edged.engines import create_engine
from edged.engines.prefix_store import PrefixStore
from edged.engines.worker import ModelWorker
from edged.errors import ConfigError
from edged.events import Events
from edged.transports.unix import UnixSocketTransport

if TYPE_CHECKING:
    from edged.crypto.gateway import SealedGateway
    from edged.http_service import HttpService
    from edged.mqtt_session import MqttSession
    from edged.power.energy import EnergyMeter
    from edged.power.governor import Governor
    from edged.power.profiles import Profile
    from edged.transports.wyoming import WyomingTransport

Peers = tuple[set[int], set[int]]  # the uids and gids that may send plaintext


def profiles_and_governor(config: Config) -> tuple[dict[str, Profile], Path, Governor]:
    """The loaded profiles, their directory (re-read on SIGHUP) and the governor that picks one."""
    from edged.power.governor import Governor  # noqa: PLC0415  (power is start-up work)
    from edged.power.profiles import builtin_profiles_dir, load_profiles

    directory = config.profile.directory or builtin_profiles_dir()
    profiles = load_profiles(directory)
    rules = config.power.governor
    if config.profile.name is not None:
        if config.profile.name not in profiles:
            raise ConfigError(f"profile {config.profile.name!r} not found; have: {', '.join(sorted(profiles))}")
        rules = rules.model_copy(update={"default_profile": config.profile.name})
    return profiles, directory, Governor(profiles, rules)


def model_worker(config: Config, state_dir: Path, model_path: Path) -> ModelWorker:
    """The engine for the model file or directory on its one thread; nothing is loaded yet."""
    # A missing file is a typo, not a bad model: serving model_unavailable would hide it.
    if not model_path.exists():
        raise ConfigError(f"model {model_path}: no such file or directory; set [model] path or --model")
    engine = create_engine(model_path)
    prefix_bytes = config.model.prefix_cache_bytes
    prefixes = PrefixStore(state_dir / "prefix-cache", prefix_bytes) if prefix_bytes else None
    return ModelWorker(engine, prefix_store=prefixes)


def energy_meter(config: Config) -> EnergyMeter:
    from edged.power.energy import EnergyMeter  # noqa: PLC0415  (power detection is start-up work)

    return EnergyMeter.detect(config.power.sysfs_root, board=config.power.board)


def sealed_gateway(config: Config, state_dir: Path, events: Events) -> SealedGateway:
    """Device keys, prekeys and the allow-list (re-read on SIGHUP) behind the one security path."""
    from edged.crypto.gateway import SealedGateway  # noqa: PLC0415

    gateway = SealedGateway(config.e2e, state_dir, config.device_id, pad_responses=config.privacy.pad_responses)
    events.reload.connect(gateway.allow_list.reload, name="AllowList.reload")
    return gateway


def plaintext_peers(sock: SocketConfig) -> Peers:
    """Who may send plaintext on the sockets: root and the service's user and group by default."""
    uids = set(sock.plaintext_uids) if sock.plaintext_uids is not None else {0, os.getuid()} - {65534}
    # The service's group by default, as the unit promises; naming uids alone means exactly those.
    default_gids = {os.getgid()} - {65534} if sock.plaintext_uids is None else set()
    gids = set(sock.plaintext_gids) if sock.plaintext_gids is not None else default_gids
    return uids, gids


def socket_transport(sock: SocketConfig, path: Path, core: Core, control: DeviceControl,
                     gateway: SealedGateway, peers: Peers) -> UnixSocketTransport:
    uids, gids = peers
    return UnixSocketTransport(
        path, core, mode=sock.mode, max_frame=sock.max_frame_bytes, max_connections=sock.max_connections,
        max_connections_per_uid=sock.max_connections_per_uid, plaintext_uids=uids, plaintext_gids=gids,
        control=control, sealed=gateway)


def http_service(config: Config, *, core: Core, control: DeviceControl, events: Events, energy: EnergyMeter,
                 socket_path: Path, state_dir: Path, peers: Peers,
                 mqtt: Callable[[], MqttSession | None]) -> HttpService | None:
    """The HTTP API when [http] is enabled; its sockets are bound by start(), served after READY."""
    if not config.http.enabled:
        return None
    from edged.http_service import HttpService  # noqa: PLC0415  (h11: only when enabled)

    return HttpService(config, core=core, control=control, events=events, energy=energy, socket_path=socket_path,
                       state_dir=state_dir, plaintext=peers, mqtt=mqtt)


def wyoming_transport(config: Config, core: Core, worker: ModelWorker, control: DeviceControl,
                      state_dir: Path) -> WyomingTransport | None:
    """The Wyoming handle server when [wyoming] uri is set."""
    if config.wyoming.uri is None:
        return None
    from edged.transports.wyoming import WyomingTransport  # noqa: PLC0415  (wyoming: only when configured)
    from edged.transports.wyoming_wire import model_facts

    release = serving_release(state_dir, worker) if config.updates is not None else lambda: None
    return WyomingTransport(config.wyoming, core, lambda: model_facts(worker.info, control.model_name(), release()))


def serving_release(state_dir: Path, worker: ModelWorker) -> Callable[[], str | None]:
    """The signed release that installed the loaded model (``stable v3``); the pointer is read once per load."""
    from edged.fleet.device.slots import Slots  # noqa: PLC0415  (only with [updates])

    slots = Slots(state_dir)
    read_for: object = object()  # the ModelInfo the release was read for: a (re)load makes a new one
    release: str | None = None

    def current() -> str | None:
        nonlocal read_for, release
        info = worker.info
        if info is not read_for:
            pointer = slots.read_pointer()
            serving = pointer is not None and (info is None or Path(info.path).name == pointer.model)
            read_for, release = info, f"{pointer.channel} v{pointer.version}" if serving and pointer else None
        return release

    return current


def mqtt_session(config: Config, *, core: Core, gateway: SealedGateway, control: DeviceControl, events: Events,
                 state_dir: Path) -> MqttSession | None:
    """Everything that rides on the broker connection when [mqtt] is configured."""
    if config.mqtt is None:
        return None
    from edged.mqtt_session import MqttSession  # noqa: PLC0415  (paho: only when configured)

    return MqttSession(config.mqtt, config, core=core, gateway=gateway, control=control, events=events,
                       state_dir=state_dir)
