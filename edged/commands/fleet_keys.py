"""`edged fleet init | release | rotate-root | install-root`: fleet keys, signed releases, trust roots."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from edged.errors import ConfigError
from edged.atomic import write_atomic
from edged.fleet.hashing import HASH_BLOCK, sha256_file
from edged.fleet.dsse import describe_validation_error
from edged.fleet.depot.keystore import OperatorKeys, keyid_of_hex
from edged.fleet.manifest import ReleaseManifest
from edged.fleet.trust import (
    ExpiryClock,
    TrustRoot,
    TrustStore,
    encode_root,
    format_timestamp,
    read_self_signed_root,
    root_fingerprint,
    utc_now,
)

PROGRESS_FROM_BYTES: Final = 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
_FORMATTER = argparse.RawDescriptionHelpFormatter

INIT_EPILOG = """\
Creates KEYS/root/*.pem and KEYS/release/*.pem (Ed25519, mode 0600) and KEYS/root.json, the
signed trust root v1 that every device needs. Root keys sign only new trust roots: after init,
move KEYS/root/ to offline storage (ideally one key per medium and person). Release keys sign
every release and stay on the publishing machine.

examples:
  edged fleet init --dir ~/edged-keys
  edged fleet init --dir ./keys --root-keys 3 --root-threshold 2 --release-keys 2 --release-threshold 1
"""
RELEASE_EPILOG = """\
Hashes the model (progress on stderr), writes the signed release manifest to --out and keeps a
copy in KEYS/releases/. --model is a .gguf file or an ONNX model directory (edged convert onnx
makes one): every file of the directory is listed by relative path, size and SHA-256 as
<name>/<path>, and devices check each file. A directory must hold edged_model.json and no
symlinks. Versions only go up, per channel: to roll back, release the OLD model again under a
NEW, higher version. Copy the model (the directory as it is) into the depot's --models.

examples:
  edged fleet release --dir ./keys --model smollm2-q8.gguf --channel stable --version 7
  edged fleet release --dir ./keys --model ./smollm2-onnx --channel stable --version 8
  edged fleet release --dir ./keys --model m.gguf --channel beta --version 3 --expires 14d \\
      --target-group lab --target-hardware rpi5 --health-prompt "Say hello." --out beta-3.json
"""
ROTATE_EPILOG = """\
Writes trust root N+1, signed by a threshold of the current root keys AND of the new ones, to
KEYS/root.json and KEYS/roots/N+1.root.json. Devices accept roots one version at a time, so
publish every numbered root in order. Removed keys move to KEYS/retired/. Needs the offline root
keys back in KEYS/root/ for this step. With no option it only renews the expiry.

examples:
  edged fleet rotate-root --dir ./keys --expires-days 365
  edged fleet rotate-root --dir ./keys --add-release-keys 1 --remove-key 3f2a9c01d4e5b6a7
  edged fleet rotate-root --dir ./keys --add-root-keys 1 --remove-key 9e8d7c6b --root-threshold 2
"""
INSTALL_EPILOG = """\
On a device: installs the first trust root (provisioning), or applies newer roots (N+1, N+2, ...
in order) to the installed one. The root is kept at <state dir>/trust/root.json. Expiry is checked
against the local clock, since an operator is present.

examples:
  edged fleet install-root root.json
  edged fleet install-root --state-dir /var/lib/edged roots/2.root.json roots/3.root.json
"""


def register(fleet_subparsers: Any) -> None:
    """Add init, release, rotate-root and install-root to the `edged fleet` sub-command group."""
    init = _add_command(fleet_subparsers, "init", "create fleet keys and a signed trust root", INIT_EPILOG)
    init.add_argument("--dir", type=Path, required=True, help="new, empty key directory")
    init.add_argument("--root-keys", type=int, default=3, help="root keys to create (default 3)")
    init.add_argument("--root-threshold", type=int, default=2, help="root signatures needed (default 2)")
    init.add_argument("--release-keys", type=int, default=1, help="release keys to create (default 1)")
    init.add_argument("--release-threshold", type=int, default=1, help="release signatures needed (default 1)")
    init.add_argument("--expires-days", type=int, default=365, help="trust root lifetime in days (default 365)")
    init.set_defaults(func=cmd_init)

    release = _add_command(fleet_subparsers, "release", "sign a release manifest for a GGUF file or an ONNX directory",
                           RELEASE_EPILOG)
    release.add_argument("--dir", type=Path, required=True, help="key directory made by `edged fleet init`")
    release.add_argument("--model", type=Path, required=True, help="the model: a .gguf file or an ONNX model directory")
    release.add_argument("--channel", required=True, help="release channel, e.g. stable")
    release.add_argument("--version", type=int, required=True, help="release version, above every earlier one")
    release.add_argument("--fleet", default="default", help="fleet name the devices are configured with")
    release.add_argument("--expires", default="30d", help="Nd (days from now) or 2027-01-31T00:00:00Z (default 30d)")
    release.add_argument("--out", type=Path, help="where to write the signed manifest (default: only KEYS/releases/)")
    release.add_argument("--artifact-name", help="file or directory name on the device (default: the model's own name)")
    release.add_argument(
        "--target-device", action="append", default=[], metavar="ID", help="only device ID (repeat for several)"
    )
    release.add_argument(
        "--target-group", action="append", default=[], metavar="G", help="only devices in group G (repeatable)"
    )
    release.add_argument(
        "--target-hardware",
        action="append",
        default=[],
        metavar="HW",
        help="only hardware id HW, e.g. rpi5 (repeatable)",
    )
    release.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="transfer chunk (default 64 KiB)")
    release.add_argument("--health-prompt", help="test prompt the device runs before committing the new model")
    release.add_argument("--health-max-tokens", type=int, default=16, help="tokens for the test (default 16)")
    release.add_argument("--health-timeout", type=int, default=60, help="seconds for the test (default 60)")
    release.set_defaults(func=cmd_release)

    rotate = _add_command(
        fleet_subparsers, "rotate-root", "sign trust root N+1 (new keys, revoked keys, renewal)", ROTATE_EPILOG
    )
    rotate.add_argument("--dir", type=Path, required=True, help="key directory")
    rotate.add_argument("--add-root-keys", type=int, default=0, help="new root keys to create")
    rotate.add_argument("--add-release-keys", type=int, default=0, help="new release keys to create")
    rotate.add_argument("--remove-key", action="append", default=[], metavar="KEYID", help="key id (8+ hex digits)")
    rotate.add_argument("--root-threshold", type=int, help="new root threshold (default: unchanged)")
    rotate.add_argument("--release-threshold", type=int, help="new release threshold (default: unchanged)")
    rotate.add_argument("--expires-days", type=int, default=365, help="new root lifetime in days (default 365)")
    rotate.set_defaults(func=cmd_rotate_root)

    install = _add_command(
        fleet_subparsers, "install-root", "on a device: install or advance the trust root", INSTALL_EPILOG
    )
    install.add_argument("roots", type=Path, nargs="+", metavar="ROOT_JSON", help="signed root file(s), in order")
    install.add_argument("--state-dir", type=Path, help="device state directory (default: edged's default)")
    install.add_argument("--replace", action="store_true", help="overwrite the installed root (re-provisioning)")
    install.set_defaults(func=cmd_install_root)


def _add_command(fleet_subparsers: Any, name: str, summary: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = fleet_subparsers.add_parser(
        name, help=summary, description=f"edged fleet {name}: {summary}.", epilog=epilog, formatter_class=_FORMATTER
    )
    return parser


def cmd_init(args: argparse.Namespace) -> int:
    keys = OperatorKeys.create(
        args.dir,
        root_keys=args.root_keys,
        root_threshold=args.root_threshold,
        release_keys=args.release_keys,
        release_threshold=args.release_threshold,
        expires=_days_from_now(args.expires_days),
    )
    root = keys.current_root()
    print(f"created fleet keys in {args.dir} (trust root v{root.version}, fingerprint {root_fingerprint(root)})")
    print(_describe_root(root))
    print(f"  {args.dir}/root/  -> move to OFFLINE storage; bring back only for `edged fleet rotate-root`")
    print(f"  {args.dir}/release/  -> stays on the machine that runs `edged fleet release`")
    print(f"  {keys.root_path}  -> copy to every device, then run `edged fleet install-root root.json` there")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from edged.fleet.depot.listing import hashed_artifacts, model_files, placeholder_artifacts

    keys = OperatorKeys(args.dir)
    is_directory = args.model.is_dir() and not args.model.is_symlink()
    name = args.artifact_name or args.model.name
    document: dict[str, Any] = {
        "fleet": args.fleet,
        "channel": args.channel,
        "version": args.version,
        "expires": _parse_expires(args.expires),
        "targets": {"devices": args.target_device, "groups": args.target_group, "hardware": args.target_hardware},
        # Placeholder until the model is listed and hashed, so that bad options fail before a long hash.
        "artifacts": [{"name": "placeholder.gguf", "size": 1, "sha256": "0" * 64, "format": "gguf"}],
        "chunk_size": args.chunk_size,
    }
    if args.health_prompt:
        document["health_check"] = {
            "prompt": args.health_prompt,
            "max_tokens": args.health_max_tokens,
            "timeout_s": args.health_timeout,
        }
    try:
        draft = ReleaseManifest.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"release manifest: {describe_validation_error(exc)}") from None
    if draft.expires <= utc_now():
        raise ConfigError(f"--expires {args.expires}: that time has passed")
    keys.check_next_version(draft.channel, draft.version)
    files = model_files(args.model, args.artifact_name)
    artifacts = hashed_artifacts(files, placeholder_artifacts(files, is_directory), _hash_file)
    manifest = draft.model_copy(update={"artifacts": artifacts})
    signed = keys.sign_release(manifest)
    if args.out:
        _write_output(args.out, signed)
    where = args.out or args.dir / "releases" / f"{manifest.channel}-{manifest.version}.json"
    total = sum(a.size for a in artifacts)
    if is_directory:
        print(f"signed {manifest.fleet}/{manifest.channel} v{manifest.version}: ONNX directory {name}, "
              f"{len(artifacts)} files, {total} bytes")
        for artifact in artifacts:
            print(f"  {artifact.name} {artifact.size} bytes sha256 {artifact.sha256}")
    else:
        print(f"signed {manifest.fleet}/{manifest.channel} v{manifest.version}: {name} {total} bytes "
              f"sha256 {artifacts[0].sha256}")
    print(f"  expires {format_timestamp(manifest.expires)}; manifest written to {where}")
    return 0


def cmd_rotate_root(args: argparse.Namespace) -> int:
    keys = OperatorKeys(args.dir)
    root, _ = keys.rotate_root(
        expires=_days_from_now(args.expires_days),
        add_root_keys=args.add_root_keys,
        add_release_keys=args.add_release_keys,
        remove_keyids=args.remove_key,
        root_threshold=args.root_threshold,
        release_threshold=args.release_threshold,
    )
    print(f"trust root v{root.version} written to {keys.root_path} (fingerprint {root_fingerprint(root)})")
    print(_describe_root(root))
    print(f"  devices need {args.dir / 'roots'}/{root.version}.root.json (and every version before it, in order)")
    print(f"  move {args.dir}/root/ back to offline storage")
    return 0


def cmd_install_root(args: argparse.Namespace) -> int:
    from edged.paths import default_state_dir

    store = TrustStore(args.state_dir or default_state_dir(), ExpiryClock(policy="trust-system-clock"))
    for path in args.roots:
        envelope = _read_input(path)
        if args.replace or not store.path.exists():
            root = store.provision(envelope, replace=args.replace)
        else:
            root = _advance_root(store, envelope)
        print(f"{path}: trust root v{root.version} installed at {store.path} (fingerprint {root_fingerprint(root)})")
    return 0


def _advance_root(store: TrustStore, envelope: bytes) -> TrustRoot:
    """Rotate to ``envelope``; installing the root that is already in place again is a no-op."""
    installed = store.current()
    if encode_root(read_self_signed_root(envelope)) == encode_root(installed):
        return installed
    return store.rotate(envelope)


def _describe_root(root: TrustRoot) -> str:
    lines = [f"  expires {format_timestamp(root.expires)}"]
    for role, listed in (("root", root.root), ("release", root.release)):
        ids = ", ".join(keyid_of_hex(key)[:16] for key in listed.keys)
        lines.append(f"  {role}: {listed.threshold} of {len(listed.keys)} keys ({ids})")
    return "\n".join(lines)


def _hash_file(path: Path) -> tuple[int, str]:
    def progress(done: int) -> None:
        if total >= PROGRESS_FROM_BYTES and (done // HASH_BLOCK) % 64 == 0:
            print(f"\rhashing {path.name}: {100 * done // total}%", end="", file=sys.stderr, flush=True)

    try:
        total = path.stat().st_size
        done, sha256 = sha256_file(path, on_progress=progress)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if total >= PROGRESS_FROM_BYTES:
        print(f"\rhashing {path.name}: 100%", file=sys.stderr)
    if done == 0:
        raise ConfigError(f"{path} is empty")
    return done, sha256


def _parse_expires(text: str) -> str:
    """``Nd`` becomes a timestamp; anything else is left for the manifest's own strict check."""
    if match := re.fullmatch(r"([0-9]{1,4})d", text):
        return format_timestamp(_days_from_now(int(match.group(1))))
    return text


def _days_from_now(days: int) -> datetime:
    if not 1 <= days <= 3650:
        raise ConfigError(f"{days} days: choose between 1 and 3650")
    return utc_now() + timedelta(days=days)


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _write_output(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None
