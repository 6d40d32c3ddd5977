"""The installer's static group comes with the static user of the same name (issue 12 item 2).

The unit's DynamicUser= names its user after the unit; systemd refuses to start it (EILSEQ,
217/USER) when a static group of that name exists and no static user does. The installer's
`groupadd` made exactly that, and so did the documented recipe for letting local clients in.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bundle"))

from edged_install import system  # noqa: E402

UNIT = REPO / "systemd" / "edged.service"
OPERATIONS = REPO / "docs" / "operations.md"


def unit_setting(key: str) -> str | None:
    values = [line.partition("=")[2].strip() for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]
    return values[-1] if values else None


def test_the_units_user_and_group_are_the_names_the_installer_creates() -> None:
    assert unit_setting("DynamicUser") == "yes"
    user = unit_setting("User") or UNIT.stem  # DynamicUser= without User= takes the unit's name
    assert (system.USER, system.GROUP) == (user, unit_setting("Group"))


def test_the_documented_recipe_creates_the_user_with_the_group() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", OPERATIONS.read_text(), flags=re.DOTALL)
    recipes = [block for block in blocks if re.search(r"\bgroupadd\b.*\bedged\b", block)]
    assert recipes, "docs/operations.md no longer shows how to create the edged group"
    for recipe in recipes:
        assert re.search(r"\buseradd\b[^\n]*--gid edged[^\n]* edged\s*$", recipe, flags=re.MULTILINE), recipe


def fresh_root(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\n")
    for name in ("shadow", "gshadow"):
        os.chmod(root / "etc" / name, 0o640)
    return root


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                    reason="useradd --prefix needs root and the shadow tools")
def test_the_installer_adds_and_removes_the_user_in_its_group(tmp_path: Path) -> None:
    root = fresh_root(tmp_path / "root")
    system.add_group(root)
    system.add_user(root)
    assert system.group_exists(root) and system.user_exists(root)
    (gid,) = [line.split(":")[2] for line in (root / "etc/group").read_text().splitlines()
              if line.startswith("edged:")]
    (entry,) = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                if line.startswith("edged:")]
    assert entry[3] == gid and entry[5:] == ["/nonexistent", "/usr/sbin/nologin"]
    assert int(entry[2]) < 1000  # a system account
    system.remove_user(root)
    system.remove_group(root)  # refused while a user has it as primary group: the user goes first
    assert not system.user_exists(root) and not system.group_exists(root)
