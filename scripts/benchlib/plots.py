"""PNG charts for docs/benchmarks/: TTFT, decode rate and the prefix cache, one bar per target
(plots_edged adds edged's own: added TTFT per transport, sealing cost, power profiles).

matplotlib is a benchmark-only dependency (not one of edged's): without it the report says so and
carries the tables alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def matplotlib_missing() -> str | None:
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        return "matplotlib is not installed (.venv/bin/python -m pip install matplotlib): no plots"
    return None


def draw_all(results: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    from benchlib.plots_edged import draw_edged  # noqa: PLC0415  (imports matplotlib on use)

    matplotlib.use("Agg")  # files only, no display
    directory.mkdir(parents=True, exist_ok=True)
    note = _caveat(results)
    drawn = [_ttft(results, directory / "ttft.png", note), _decode(results, directory / "decode.png", note),
             _prefix(results, directory / "prefix-cache.png", note),
             *draw_edged(results, directory, note)]
    return [path for path in drawn if path is not None]


def _caveat(results: dict[str, Any]) -> str:
    notes = []
    if results["settings"]["quick"]:
        notes.append("quick mode")
    if results["load"]["warnings"]:
        notes.append("machine NOT idle: noisy")
    return "\n" + ", ".join(notes) if notes else ""


def _bars(path: Path, title: str, xlabel: str, labels: list[str], values: list[float],
          whiskers: list[float | None], whisker_label: str) -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.6))
    positions = list(range(len(labels)))
    axes.barh(positions, values, color="#4C72B0")
    for y, value, whisker in zip(positions, values, whiskers):
        if whisker is not None:
            axes.plot([value, whisker], [y, y], color="black", linewidth=1)
            axes.plot([whisker], [y], marker="|", color="black", markersize=12)
        # Label past the whisker's end so the two never overlap.
        axes.text(max(value, whisker or value), y, f"  {value:.1f}", va="center", ha="left", fontsize=9)
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel(f"{xlabel} (bar: median, whisker: {whisker_label})")
    axes.set_title(title, fontsize=10)
    axes.set_xlim(0, max(*values, *(w or 0 for w in whiskers)) * 1.25)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _ttft(results: dict[str, Any], path: Path, note: str) -> Path | None:
    labels, values, whiskers = [], [], []
    for name, target in results["targets"].items():
        row = results["comparisons"]["rows"][name]
        if row["ttft_ms_median"] is not None:  # targets without chat (profile sweep, sealing) have None
            labels.append(target["label"])
            values.append(row["ttft_ms_median"])
            whiskers.append(row["ttft_ms_p90"])
    return _bars(path, f"Time to first token{note}", "ms", labels, values, whiskers, "p90")


def _decode(results: dict[str, Any], path: Path, note: str) -> Path | None:
    labels, values, whiskers = [], [], []
    bench = ((results.get("llama_bench") or {}).get("tests") or {}).get("decode")
    if bench and bench["tokens_per_s"]:
        labels.append(f"llama-bench {bench['test']}")
        values.append(bench["tokens_per_s"]["median"])
        whiskers.append(bench["tokens_per_s"]["p10"])
    for name, target in results["targets"].items():
        row = results["comparisons"]["rows"][name]
        if row["decode_tps_median"] is not None:
            labels.append(target["label"])
            values.append(row["decode_tps_median"])
            whiskers.append(row["decode_tps_p10"])
    return _bars(path, f"Decode rate, {results['engine']['threads']} threads{note}", "tokens/s", labels, values,
                 whiskers, "p10")


def _prefix(results: dict[str, Any], path: Path, note: str) -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels, reused, fresh = [], [], []
    for target in results["targets"].values():
        prefix = target.get("scenarios", {}).get("prefix-cache")
        if prefix and "error" not in prefix:
            labels.append(target["label"])
            reused.append(prefix["reused"]["summary"]["ttft_ms"]["median"])
            fresh.append(prefix["fresh"]["summary"]["ttft_ms"]["median"])
    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.8 * len(labels) + 1.6))
    positions = list(range(len(labels)))
    height = 0.38
    axes.barh([p - height / 2 for p in positions], reused, height, label="reused system prompt", color="#55A868")
    axes.barh([p + height / 2 for p in positions], fresh, height, label="fresh system prompt", color="#C44E52")
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel("median time to first token, ms")
    axes.set_title(f"Prefix cache: ~300-token system prompt{note}", fontsize=10)
    axes.legend(loc="lower right", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
