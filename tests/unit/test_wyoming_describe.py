"""What Wyoming's `describe` says about the model: the file's own attribution and version, or the signed release."""

from pathlib import Path
from types import SimpleNamespace

from edged.assembly import serving_release
from edged.engines.base import ModelInfo
from edged.fleet.device.journal import SlotPointer
from edged.fleet.device.slots import Slots
from edged.transports.wyoming_wire import MAX_FACT_CHARS, MAX_URL_CHARS, info_event, model_facts
from wyoming.info import Info


def model_info(path: str = "/models/smol.gguf", **fields) -> ModelInfo:
    return ModelInfo(**{"name": "SmolLM2", "path": path, "format": "gguf", "size_bytes": 1, "parameters": 135_000_000,
                        "context": 2048, "context_train": 8192, "threads": 2, **fields})


def test_the_files_attribution_and_version_reach_the_info():
    facts = model_facts(model_info(author="HuggingFaceTB", url="https://huggingface.co/HuggingFaceTB", version="2.0"),
                        "smol")
    (program,) = Info.from_event(info_event(facts, ["en"], True)).handle
    (model,) = program.models
    assert (model.name, model.version) == ("SmolLM2", "2.0")
    assert (model.attribution.name, model.attribution.url) == ("HuggingFaceTB", "https://huggingface.co/HuggingFaceTB")
    assert model.description == "GGUF model, 135M parameters, served by edged"


def test_a_file_that_names_nobody_says_unknown_and_no_version():
    facts = model_facts(model_info(), "smol")
    assert (facts.author, facts.url, facts.version) == ("unknown", "", None)
    assert model_facts(None, "smol").name == "smol"


def test_the_signed_release_is_the_version_when_one_is_serving():
    assert model_facts(model_info(version="2.0"), "smol", "stable v3").version == "stable v3"
    assert model_facts(None, "smol", "stable v3").version == "stable v3"


def test_hostile_metadata_is_bounded_and_printable():
    facts = model_facts(model_info(name="\x1b[2J" + "n" * 5000, author="evil\nInjected: yes\x00", url="u" * 10_000,
                                   version="\r\n\t"), "smol")
    assert facts.name == "[2J" + "n" * (MAX_FACT_CHARS - 3)
    assert facts.author == "evilInjected: yes" and len(facts.url) == MAX_URL_CHARS and facts.version is None
    assert model_facts(model_info(name="\x00\x01"), "fallback").name == "fallback"


def pointer(model: str, version: int) -> SlotPointer:
    return SlotPointer(slot="slot-a", model=model, size=1, sha256="ab" * 32, channel="stable", version=version)


def test_serving_release_reads_the_pointer_once_per_load(tmp_path: Path):
    worker = SimpleNamespace(info=model_info(path=str(tmp_path / "models/slot-a/smol.gguf")))
    release = serving_release(tmp_path, worker)  # type: ignore[arg-type]
    assert release() is None  # no signed release installed: the configured model
    Slots(tmp_path).write_pointer(pointer("smol.gguf", 3))
    assert release() is None  # the same load: not read again
    worker.info = model_info(path=str(tmp_path / "models/slot-a/smol.gguf"))  # reloaded
    assert release() == "stable v3"
    Slots(tmp_path).write_pointer(pointer("other.gguf", 4))
    worker.info = model_info(path=str(tmp_path / "models/slot-a/smol.gguf"))
    assert release() is None  # the pointer names another model than the one loaded


def test_a_damaged_pointer_is_no_release(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "current").write_bytes(b"{not json")
    release = serving_release(tmp_path, SimpleNamespace(info=None))  # type: ignore[arg-type]
    assert release() is None
