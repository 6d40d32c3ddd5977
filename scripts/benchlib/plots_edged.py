"""edged's own charts: TTFT added per transport (and by sealing), sealing cost, and the power profiles.

The per-target charts (TTFT, decode) in plots.py already carry the MQTT and ONNX targets as bars.
Only called when matplotlib is importable (plots.draw_all checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw_edged(results: dict[str, Any], directory: Path, note: str) -> list[Path | None]:
    return [_added_ttft(results, directory / "added-ttft.png", note),
            _sealing(results, directory / "sealing-cost.png", note),
            _profiles(results, directory / "power-profiles.png", note)]


def _scenario(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    for target in results["targets"].values():
        found = target.get("scenarios", {}).get(name)
        if found and "error" not in found:
            return found
    return None


def _hbars(path: Path, title: str, xlabel: str, labels: list[str], values: list[float], fmt: str,
           color: str = "#4C72B0") -> Path | None:
    """Horizontal bars that may be negative (a difference of medians can be), each labelled with its value."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.6))
    positions = list(range(len(labels)))
    axes.barh(positions, values, color=color)
    for y, value in zip(positions, values):
        axes.text(value, y, f"  {value:{fmt}}  ", va="center", ha="left" if value >= 0 else "right", fontsize=9)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    axes.set_xlim(low - 0.3 * span * (low < 0), high + 0.3 * span)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _added_ttft(results: dict[str, Any], path: Path, note: str) -> Path | None:
    labels, values = [], []
    for name, item in results["comparisons"]["added_ttft"].items():
        labels.append(f"{results['targets'].get(name, {}).get('label', name)}\nover the in-process engine")
        values.append(item["median_added_ms"])
    sealed = _scenario(results, "sealed-socket")
    if sealed:
        labels.append("sealed over plaintext\n(same socket)")
        values.append(sealed["added_ms"]["median"])
    return _hbars(path, f"Time to first token added (median of request pairs){note}", "ms", labels, values, ".2f")


def _sealing(results: dict[str, Any], path: Path, note: str) -> Path | None:
    data = _scenario(results, "seal-cost")
    if not data:
        return None
    labels = list(data["operations"]) + ["per request (sum of the first four)"]
    values = [op["median_us"] for op in data["operations"].values()] + [data["per_request_us"]]
    return _hbars(path, f"e2e-v1 sealing cost per call (median){note}", "µs", labels, values, ".1f", color="#8172B2")


def _profiles(results: dict[str, Any], path: Path, note: str) -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    data = _scenario(results, "power-profiles")
    if not data:
        return None
    names = list(data["profiles"])
    items = [data["profiles"][n] for n in names]
    rates = [(item["summary"]["decode_tokens_per_s"] or {}).get("median") or 0.0 for item in items]
    joules = [item["energy_j_per_token_median"] or 0.0 for item in items]
    estimate = any(item["estimate"] for item in items)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axes, values, label, fmt, color in ((left, rates, "decode tokens/s (median)", ".1f", "#4C72B0"),
                                           (right, joules, "J/token (median)" + (", ESTIMATE" if estimate else ""),
                                            ".4f", "#DD8452")):
        axes.bar(names, values, color=color)
        for x, value in enumerate(values):
            axes.text(x, value, f"{value:{fmt}}", ha="center", va="bottom", fontsize=9)
        axes.set_ylabel(label)
        axes.set_ylim(0, max(values or [1.0]) * 1.2 or 1.0)
    figure.suptitle(f"Power profiles: {data['tokens']} tokens per request, priority {data['priority']}"
                    + (" (energy estimated, no power sensor)" if estimate else "") + note.replace("\n", ", "),
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
