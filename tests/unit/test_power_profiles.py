"""Profile files: the shipped ones validate, every kind of bad file is a ConfigError naming the field."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

import edged
from edged.commands import profiles as profiles_command
from edged.errors import ConfigError
from edged.power.profiles import (MAX_PROFILE_BYTES, PaceSettings, builtin_profiles_dir, load_profile,
                                  load_profiles)

SHIPPED = Path(edged.__file__).resolve().parent.parent / "profiles"


@pytest.fixture
def balanced_text() -> str:
    return (SHIPPED / "balanced.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "balanced") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


# ---- shipped profiles -------------------------------------------------------------------------

def test_every_shipped_profile_validates() -> None:
    profiles = load_profiles(builtin_profiles_dir())
    assert {"performance", "balanced", "eco", "parked"} <= set(profiles)


def test_parked_admits_only_interactive_unloads_after_a_minute_and_never_downloads() -> None:
    parked = load_profile(SHIPPED / "parked.toml")
    assert parked.admission.priorities == ["interactive"]
    assert parked.idle.unload_after_s == 60.0
    assert parked.updates.allow_downloads is False
    assert parked.updates.allow_installs is True  # install_when = "parked" installs here
    assert parked.pace.duty_cycle < 1


def test_installs_are_allowed_unless_a_profile_says_otherwise() -> None:
    assert all(profile.updates.allow_installs for profile in load_profiles(builtin_profiles_dir()).values())


def test_profiles_get_less_hungry_along_the_governor_order() -> None:
    profiles = load_profiles(builtin_profiles_dir())
    ladder = [profiles[name] for name in ("performance", "balanced", "eco", "parked")]
    threads = [profile.engine.threads for profile in ladder]
    assert threads == sorted(threads, reverse=True)
    assert all(profile.engine.threads <= 4 for profile in ladder)  # a Pi 4/5 has four cores


def test_every_field_of_the_shipped_files_is_commented() -> None:
    for path in SHIPPED.glob("*.toml"):
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line, f"{path.name}: undocumented line {line!r}"


def test_builtin_dir_prefers_the_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "edged"
    (package / "_profiles").mkdir(parents=True)
    shutil.copy(SHIPPED / "eco.toml", package / "_profiles" / "eco.toml")
    monkeypatch.setattr(edged, "__file__", str(package / "__init__.py"))
    assert builtin_profiles_dir() == package / "_profiles"


def test_builtin_dir_missing_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edged, "__file__", str(tmp_path / "edged" / "__init__.py"))
    with pytest.raises(ConfigError, match="no built-in profiles"):
        builtin_profiles_dir()


def test_needs_reload_only_for_engine_shape_changes() -> None:
    balanced = load_profile(SHIPPED / "balanced.toml")
    assert not balanced.needs_reload(balanced.model_copy(update={"description": "x"}))
    cheaper = balanced.model_copy(update={"engine": balanced.engine.model_copy(update={"max_tokens": 8})})
    assert not balanced.needs_reload(cheaper)
    for field, value in [("threads", 1), ("context", 512), ("batch", 32), ("kv_cache_type", "q8_0"),
                         ("mmap", False), ("mlock", True)]:
        other = balanced.model_copy(update={"engine": balanced.engine.model_copy(update={field: value})})
        assert balanced.needs_reload(other), field


# ---- bad files --------------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "message"), [
    ("threads = 3 ", "threads = 100 ", r"engine\.threads: Input should be less than or equal to 64 \(got 100\)"),
    ("threads = 3 ", 'threads = "3" ', r"engine\.threads: Input should be a valid integer"),
    ("batch = 256 ", "batch = 0 ", r"engine\.batch: Input should be greater than or equal to 1"),
    ("context = 2048 ", "context = 64 ", r"engine\.context: Input should be greater than or equal to 128"),
    ('kv_cache_type = "f16"', 'kv_cache_type = "f32"', r"engine\.kv_cache_type: Input should be"),
    ("mmap = true ", "mmap = 1 ", r"engine\.mmap: Input should be a valid boolean"),
    ("duty_cycle = 1.0 ", "duty_cycle = 0.0 ", r"pace\.duty_cycle: Input should be greater than 0"),
    ("duty_cycle = 1.0 ", "duty_cycle = 1.5 ", r"pace\.duty_cycle: Input should be less than or equal to 1"),
    ("queue_length = 8 ", "queue_length = 2000 ", r"admission\.queue_length"),
    ('priorities = ["interactive", "normal", "background"]', "priorities = []", r"admission\.priorities"),
    ('priorities = ["interactive", "normal", "background"]', 'priorities = ["normal", "normal"]',
     r"admission\.priorities: Value error, priorities must not repeat"),
    ('priorities = ["interactive", "normal", "background"]', 'priorities = ["urgent"]',
     r"admission\.priorities\[0\]: Input should be"),
    ("requests_per_minute = 60 ", "requests_per_minute = 0 ", r"admission\.requests_per_minute"),
    ("unload_after_s = 1800.0 ", "unload_after_s = -1.0 ", r"idle\.unload_after_s"),
    ("allow_downloads = true ", 'allow_downloads = "yes" ', r"updates\.allow_downloads: Input should be a valid boolean"),
    ("allow_downloads = true ", 'allow_downloads = true\nallow_installs = "no" ',
     r"updates\.allow_installs: Input should be a valid boolean"),
    ("mlock = false ", "mlock = false\nturbo = true ", r"engine\.turbo: Extra inputs are not permitted"),
])
def test_bad_values_name_the_field_and_the_file(tmp_path: Path, balanced_text: str, old: str, new: str,
                                                 message: str) -> None:
    assert old in balanced_text
    path = write(tmp_path, balanced_text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as caught:
        load_profile(path)
    assert str(caught.value).startswith(str(path))


def test_unknown_top_level_section(tmp_path: Path, balanced_text: str) -> None:
    with pytest.raises(ConfigError, match=r"overclock: Extra inputs are not permitted"):
        load_profile(write(tmp_path, balanced_text + "\n[overclock]\nghz = 3\n"))


def test_missing_section_is_named(tmp_path: Path, balanced_text: str) -> None:
    text = balanced_text[:balanced_text.index("[updates]")]
    with pytest.raises(ConfigError, match=r"updates: Field required"):
        load_profile(write(tmp_path, text))


def test_all_bad_fields_are_reported_together(tmp_path: Path, balanced_text: str) -> None:
    text = balanced_text.replace("threads = 3 ", "threads = 0 ").replace("batch = 256 ", "batch = -1 ")
    with pytest.raises(ConfigError) as caught:
        load_profile(write(tmp_path, text))
    assert "engine.threads" in str(caught.value) and "engine.batch" in str(caught.value)


def test_name_must_match_the_file_stem(tmp_path: Path, balanced_text: str) -> None:
    with pytest.raises(ConfigError, match=r"name: 'balanced' does not match the file name 'other'"):
        load_profile(write(tmp_path, balanced_text, name="other"))


def test_malformed_toml_is_reported_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TOML syntax error: .*line 1"):
        load_profile(write(tmp_path, 'name = "balanced\n'))


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.9])
def test_truncated_files_are_config_errors(tmp_path: Path, balanced_text: str, cut: float) -> None:
    path = write(tmp_path, balanced_text[: int(len(balanced_text) * cut)])
    with pytest.raises(ConfigError, match=str(path)):
        load_profile(path)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path, balanced_text: str) -> None:
    path = write(tmp_path, balanced_text + "#" * MAX_PROFILE_BYTES)
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        load_profile(path)


def test_non_utf8_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "balanced.toml"
    path.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_profile(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")


def test_load_profiles_reports_every_bad_file(tmp_path: Path, balanced_text: str) -> None:
    write(tmp_path, balanced_text)
    write(tmp_path, "garbage = = 1", name="eco")
    write(tmp_path, balanced_text.replace('name = "balanced"', 'name = "x"'), name="parked")
    with pytest.raises(ConfigError) as caught:
        load_profiles(tmp_path)
    assert "eco.toml: TOML syntax error" in str(caught.value) and "parked.toml: name" in str(caught.value)


def test_load_profiles_needs_a_directory_with_profiles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_profiles(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"no \*\.toml"):
        load_profiles(tmp_path)


# ---- pacing -----------------------------------------------------------------------------------

def pace(**values: float | None) -> PaceSettings:
    return PaceSettings.model_validate({"duty_cycle": 1.0, **values})


def test_no_pace_limits_means_no_pause() -> None:
    assert pace().pause_after_token(0.05, None) == 0.0
    assert pace().token_rate_cap(1.0) is None


def test_duty_cycle_stretches_each_token() -> None:
    assert pace(duty_cycle=0.5).pause_after_token(0.1, None) == pytest.approx(0.1)
    assert pace(duty_cycle=0.25).pause_after_token(0.1, None) == pytest.approx(0.3)


def test_rate_cap_and_budget_pick_the_slower() -> None:
    settings = pace(max_tokens_per_s=10.0, power_budget_w=2.0)
    assert settings.token_rate_cap(None) == 10.0  # budget unknown until J/token is measured
    assert settings.token_rate_cap(0.5) == pytest.approx(4.0)  # 2 W / 0.5 J per token
    assert settings.pause_after_token(0.05, 0.5) == pytest.approx(0.25 - 0.05)
    assert settings.pause_after_token(0.5, 0.5) == 0.0  # already slower than the cap


# ---- the `edged profiles` commands ------------------------------------------------------------

def run_cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="edged")
    sub = parser.add_subparsers(dest="command", required=True)
    profiles_command.register(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("profiles", "list") == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("performance", "balanced", "eco", "parked"))
    assert run_cli("profiles", "show", "parked") == 0
    shown = capsys.readouterr().out
    data = tomllib.loads(shown)
    assert data["admission"]["priorities"] == ["interactive"] and data["idle"]["unload_after_s"] == 60.0
    assert run_cli("profiles", "show", "eco", "--json") == 0
    assert '"duty_cycle": 0.7' in capsys.readouterr().out


def test_cli_show_of_an_unknown_profile_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("profiles", "show", "turbo") == 1
    assert "no profile 'turbo'" in capsys.readouterr().err


def test_cli_validate_names_the_bad_field(tmp_path: Path, balanced_text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, balanced_text)
    bad = write(tmp_path, balanced_text.replace('name = "balanced"', 'name = "eco"').replace(
        "threads = 3 ", "threads = 65 "), name="eco")
    assert run_cli("profiles", "validate", str(good)) == 0
    assert "OK" in capsys.readouterr().out
    assert run_cli("profiles", "validate", str(good), str(bad)) == 1
    assert f"{bad}: engine.threads: Input should be less than or equal to 64" in capsys.readouterr().err


def test_cli_dir_option_and_its_errors(tmp_path: Path, balanced_text: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, balanced_text)
    assert run_cli("profiles", "list", "--dir", str(tmp_path)) == 0
    assert "balanced" in capsys.readouterr().out
    assert run_cli("profiles", "list", "--dir", str(tmp_path / "none")) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unreachable_power_budget_stops_at_a_floor():
    from edged.power.profiles import MIN_BUDGET_TOKENS_PER_S, PaceSettings

    pace = PaceSettings(duty_cycle=1.0, power_budget_w=5.0)
    assert pace.token_rate_cap(0.1) == 50.0
    assert pace.token_rate_cap(100.0) == MIN_BUDGET_TOKENS_PER_S  # 5 W at 100 J/token would be 0.05 tok/s
