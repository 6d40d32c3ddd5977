"""The docs tell the truth about the code: every config key and telemetry field is documented."""

from pathlib import Path

from pydantic import BaseModel

from edged.config import Config
from edged.telemetry.records import DeviceRecord, RequestRecord

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(prefix + name)
        annotation = info.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names += _fields(candidate, prefix + name + ".")
    return names


def test_every_config_key_is_in_operations_md():
    text = (DOCS / "operations.md").read_text()
    missing = [path for path in _fields(Config) if path.rsplit(".", 1)[-1] not in text]
    assert not missing, f"document these config keys in docs/operations.md: {missing}"


def test_every_telemetry_field_is_in_protocol_md():
    text = (DOCS / "protocol.md").read_text()
    missing = []
    for model in (RequestRecord, DeviceRecord):
        for name, info in model.model_fields.items():
            wire = info.serialization_alias or name
            if f"`{wire}`" not in text:
                missing.append(wire)
    assert not missing, f"document these telemetry fields in docs/protocol.md: {missing}"
