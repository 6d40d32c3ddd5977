"""`edged convert onnx`: turn a Llama-family GGUF into an ONNX model directory (nothing is downloaded)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

CONVERT_EPILOG = """\
examples:
  edged convert onnx model.gguf ./model-onnx               int4 (the default)
  edged convert onnx model.gguf ./model-onnx --quant int8
  edged serve --model ./model-onnx                         serve the result with the ONNX engine
GGUF blocks that fit the chosen width (Q4_0/Q4_1 for int4; also Q8_0 for int8) are copied bit for bit;
other weights are rounded to nearest per block of 32. The token embedding (also the output layer of
tied models) is kept at 8 bits. Supported: the llama architecture (Llama, SmolLM2, Mistral-style) with a
byte-level BPE vocabulary. Needs the convert extra: pip install 'edged[convert]'. See docs/models.md.
"""


def register(subparsers: Any) -> None:
    convert = subparsers.add_parser("convert", help="convert a model to another format (offline)",
                                    description="Convert models for edged's engines; nothing is downloaded.")
    formats = convert.add_subparsers(dest="convert_command", required=True, metavar="FORMAT")
    onnx = formats.add_parser("onnx", help="GGUF (llama architecture) → ONNX model directory",
                              description="Convert a GGUF into a directory for the ONNX engine: model.onnx, "
                                          "model.onnx.data, tokenizer.json and edged_model.json.",
                              epilog=CONVERT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    onnx.add_argument("gguf", type=Path, metavar="GGUF_FILE", help="the GGUF model to convert")
    onnx.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="new (or empty) output directory")
    onnx.add_argument("--quant", choices=["int4", "int8"], default="int4",
                      help="widest weight quantization (default int4: smallest and fastest on a board)")
    onnx.set_defaults(func=cmd_convert_onnx)


def cmd_convert_onnx(args: argparse.Namespace) -> int:
    try:
        import gguf  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as exc:
        print(f"edged convert: needs the {exc.name} package: pip install 'edged[convert]'", file=sys.stderr)
        return 1
    from edged.convert.onnx_export import convert_gguf
    from edged.convert.progress import Progress

    if not args.gguf.is_file():
        print(f"edged convert: {args.gguf} is not a file", file=sys.stderr)
        return 1
    result = convert_gguf(args.gguf, args.out_dir, args.quant, Progress(1))
    done = ", ".join(f"{count} {what}" for what, count in sorted(result.tensors.items()))
    print(f"converted {args.gguf.name} → {args.out_dir} in {result.seconds:.1f} s ({done})", file=sys.stderr)
    print(str(args.out_dir))
    return 0
