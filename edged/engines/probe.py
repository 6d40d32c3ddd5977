"""One token from a model, in a child process: `python -m edged.engines.probe MODEL`.

`edged doctor` runs this in a child so that an engine built for another CPU, which dies of an
illegal instruction at its first decode, is reported as an error instead of killing the doctor.
It prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edged.engines import create_engine
from edged.engines.base import EngineSettings, SamplingParams
from edged.errors import EdgedError
from edged.messages import ChatMessage


def probe(model: Path) -> dict[str, object]:
    engine = create_engine(model)
    started = time.monotonic()
    info = engine.load(EngineSettings(threads=2, batch=64, context=256))
    loaded = time.monotonic()
    pieces: list[str] = []

    def sink(text: str) -> bool:
        pieces.append(text)
        return True

    result = engine.generate([ChatMessage(role="user", content="Say OK.")], None,
                             SamplingParams(max_tokens=1), sink)
    engine.unload()
    report: dict[str, object] = {"ok": True, "model": info.name, "format": info.format,
                                 "load_s": round(loaded - started, 3),
                                 "generate_s": round(time.monotonic() - loaded, 3),
                                 "completion_tokens": result.completion_tokens, "text": "".join(pieces)}
    if info.format == "gguf":
        from edged.engines.llama_backend import cpu_backend  # noqa: PLC0415

        report["cpu_variant"] = cpu_backend().variant
    return report


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m edged.engines.probe MODEL", file=sys.stderr)
        return 2
    try:
        report = probe(Path(sys.argv[1]))
    except EdgedError as exc:
        report = {"ok": False, "error": str(exc)}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
