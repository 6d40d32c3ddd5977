"""Config: strict tree, env overrides, every bad field named by its path."""

from pathlib import Path

import pytest

from edged.config import load_config
from edged.errors import ConfigError


def test_no_file_no_env():
    config = load_config(None, environ={})
    assert config.socket.mode == 0o660 and config.model.path is None


def test_file_and_env_override(tmp_path: Path):
    file = tmp_path / "edged.toml"
    file.write_text('device_id = "pi-1"\n[socket]\npath = "/tmp/x.sock"\nmode = 0o600\n')
    config = load_config(file, environ={"EDGED_SOCKET__MODE": "0o640", "EDGED_SHUTDOWN__DRAIN_TIMEOUT_S": "2.5",
                                        "EDGED_DEVICE_ID": "pi-2"})
    assert config.socket.path == Path("/tmp/x.sock")
    assert config.socket.mode == 0o640 and config.shutdown.drain_timeout_s == 2.5 and config.device_id == "pi-2"


@pytest.mark.parametrize("text, needle", [
    ("bogus = 1\n", "bogus"),
    ("[socket]\nmode = \"660\"\n", "socket.mode"),
    ("[socket]\nmax_frame_bytes = 10\n", "socket.max_frame_bytes"),
    ("[shutdown]\ndrain_timeout_s = -1\n", "shutdown.drain_timeout_s"),
    ("[log]\nlevel = \"loud\"\n", "log.level"),
    ("device_id = \"a/b\"\n", "device_id"),
    ("[socket\n", "TOML syntax"),
    ("[limits]\nunknown = 3\n", "limits.unknown"),
])
def test_bad_field_named(tmp_path: Path, text: str, needle: str):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_config(file, environ={})


def test_oversized_and_binary(tmp_path: Path):
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * 100_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big, environ={})
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(binary, environ={})


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", environ={})


def test_bad_env_value():
    with pytest.raises(ConfigError, match=r"socket\.mode"):
        load_config(None, environ={"EDGED_SOCKET__MODE": "loud"})


def test_version_matches_pyproject():
    import tomllib

    import edged

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == edged.__version__


def test_build_tooling_variables_are_not_config_keys():
    """`EDGED_NATIVE=1 scripts/setup` and a prebuilt EDGED_ENGINE_WHEEL reach `edged doctor` at its end."""
    build = {"EDGED_NATIVE": "1", "EDGED_ENGINE_WHEEL": "/wheels/llama.whl", "EDGED_CACHE": "/tmp/cache"}
    assert load_config(None, environ=build) == load_config(None, environ={})
    with pytest.raises(ConfigError, match="native_build"):
        load_config(None, environ={"EDGED_NATIVE_BUILD": "1"} | build)
