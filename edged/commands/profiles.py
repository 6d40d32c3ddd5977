"""`edged profiles`: list, show and validate power profile files (no daemon needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edged.errors import ConfigError
from edged.power.profiles import Profile, builtin_profiles_dir, load_profile, load_profiles

PROFILES_EPILOG = """\
examples:
  edged profiles list                        the shipped profiles
  edged profiles show eco                    every setting of one profile, as TOML
  edged profiles validate ./mine.toml        check a file; each bad field is named by its path
  edged profiles list --dir /etc/edged/profiles
the running daemon's profile is changed with `edged profile set NAME`
"""


def _err(message: str) -> int:
    print(f"edged profiles: {message}", file=sys.stderr)
    return 1


def _directory(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir is not None else builtin_profiles_dir()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def profile_as_toml(profile: Profile) -> str:
    """The profile in the shipped file layout; unset optional fields appear as comments."""
    data = profile.model_dump()
    lines = [f"{key} = {_toml_value(data[key])}" for key in ("name", "description")]
    for section in ("engine", "pace", "admission", "idle", "updates"):
        lines += ["", f"[{section}]"]
        for key, value in data[section].items():
            lines.append(f"# {key}: not set (no limit)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def cmd_list(args: argparse.Namespace) -> int:
    try:
        directory = _directory(args)
        profiles = load_profiles(directory)
    except ConfigError as exc:
        return _err(str(exc))
    print(f"profiles in {directory}:")
    width = max(len(name) for name in profiles)
    for name, profile in sorted(profiles.items()):
        engine = profile.engine
        print(f"  {name:<{width}}  threads={engine.threads} context={engine.context} "
              f"admits={','.join(profile.admission.priorities)}  {profile.description}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        directory = _directory(args)
        path = directory / f"{args.name}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in directory.glob("*.toml"))
            return _err(f"no profile {args.name!r} in {directory}; known: {', '.join(known) or 'none'}")
        profile = load_profile(path)
    except ConfigError as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps(profile.model_dump(), indent=2))
    else:
        sys.stdout.write(f"# {path}\n" + profile_as_toml(profile))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    failures = 0
    for file in args.files:
        try:
            profile = load_profile(file)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            failures += 1
            continue
        print(f"{file}: OK (profile {profile.name!r})")
    return 1 if failures else 0


def register(subparsers: Any) -> None:
    """Add ``profiles list | show NAME | validate FILE...`` to the top-level sub-parsers."""
    group = subparsers.add_parser("profiles", help="list, show and validate power profiles",
                                  description="Power profile files (one TOML per profile).",
                                  epilog=PROFILES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    dir_help = "profiles directory (default: the built-in profiles)"

    listing = actions.add_parser("list", help="the profiles in a directory")
    listing.add_argument("--dir", type=Path, default=None, help=dir_help)
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="every setting of one profile")
    show.add_argument("name", help="profile name (file stem)")
    show.add_argument("--dir", type=Path, default=None, help=dir_help)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(func=cmd_show)

    validate = actions.add_parser("validate", help="check profile files; exit status 1 if any is invalid")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)
