"""The /metrics page: valid Prometheus text (prometheus_client's parser), conventional names, right values."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from edged.summary import RequestSummary
from edged.prometheus import DeviceGauges, PrometheusMetrics

GAUGES = DeviceGauges(version="0.1.0", device_id="pi-1", model_name="SmolLM2", model_format="gguf",
                      model_state="ready", profile="eco", profiles=("balanced", "eco"), queue_waiting=2,
                      queue_running=1, queue_capacity=8, energy_j_by_source={"rapl": 12.5, "estimate": 1.0},
                      power_w=4.2, power_source="rapl", temperature_c=61.5,
                      throttled={"under_voltage": False, "freq_capped": True, "throttled": False,
                                 "soft_temp_limit": False},
                      mqtt_connected=True, spool_pending_messages=3, spool_pending_bytes=900, spool_dropped_total=1)


def summary(**changes: object) -> RequestSummary:
    base = RequestSummary(request_id="r", transport="http", peer="p", client=None, priority="normal", profile="eco",
                          outcome="ok", finish_reason="stop", input_tokens=10, output_tokens=20,
                          queue_time_ms=3.0, time_to_first_token_ms=40.0, duration_ms=900.0,
                          decode_tokens_per_s=25.0, energy_j=1.0, energy_source="rapl", energy_scope="cpu_package")
    return replace(base, **changes)


def parse(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, object], name: str, **labels: str) -> float:
    for family in families.values():
        for sample in family.samples:  # type: ignore[attr-defined]
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_requests_histograms_and_device_gauges_parse_and_add_up() -> None:
    metrics = PrometheusMetrics()
    metrics.on_request(summary())
    metrics.on_request(summary(transport="unix", time_to_first_token_ms=3000.0))
    metrics.on_request(summary(outcome="cancelled", output_tokens=2, time_to_first_token_ms=None))
    metrics.on_reject("busy")
    families = parse(metrics.render(GAUGES))

    assert value(families, "edged_requests_total", transport="http", outcome="ok") == 1
    assert value(families, "edged_requests_total", transport="http", outcome="cancelled") == 1
    assert value(families, "edged_requests_total", transport="unix", outcome="ok") == 1
    assert value(families, "edged_requests_rejected_total", code="busy") == 1
    assert value(families, "edged_prompt_tokens_total") == 30 and value(families, "edged_completion_tokens_total") == 42
    # Only ok requests are timed: two of them, one TTFT at 40 ms and one at 3 s.
    assert value(families, "edged_time_to_first_token_seconds_count") == 2
    assert value(families, "edged_time_to_first_token_seconds_bucket", le="0.05") == 1
    assert value(families, "edged_time_to_first_token_seconds_bucket", le="5.0") == 2
    assert abs(value(families, "edged_time_to_first_token_seconds_sum") - 3.04) < 1e-9
    assert value(families, "edged_decode_rate_tokens_per_second_bucket", le="30.0") == 2
    assert families["edged_request_queue_wait_seconds"].type == "histogram"  # type: ignore[attr-defined]

    assert value(families, "edged_energy_joules_total", source="rapl") == 12.5
    assert value(families, "edged_power_watts", source="rapl") == 4.2
    assert value(families, "edged_cpu_temperature_celsius") == 61.5
    assert value(families, "edged_throttled", flag="freq_capped") == 1
    assert value(families, "edged_throttled", flag="under_voltage") == 0
    assert value(families, "edged_profile_active", profile="eco") == 1
    assert value(families, "edged_profile_active", profile="balanced") == 0
    assert value(families, "edged_queue_depth") == 2 and value(families, "edged_requests_running") == 1
    assert value(families, "edged_model_info", model="SmolLM2", format="gguf") == 1
    assert value(families, "edged_model_state", state="ready") == 1
    assert value(families, "edged_mqtt_connected") == 1
    assert value(families, "edged_telemetry_spool_messages") == 3
    assert value(families, "edged_telemetry_spool_dropped_total") == 1


def test_names_follow_prometheus_conventions() -> None:
    metrics = PrometheusMetrics()
    metrics.on_request(summary())
    text = metrics.render(GAUGES)
    types = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len({name for name, _ in types}) >= 20
    for name, kind in types:
        assert name.startswith("edged_")
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_per_second")), name
    assert len(list(text_string_to_metric_families(text))) == len(types)


def test_unknown_values_are_left_out_and_hostile_labels_are_escaped() -> None:
    gauges = DeviceGauges(version='1"\n\\', device_id="d", model_name='evil"} 1\nfake_metric 2', model_format=None,
                          model_state="loading", profile="eco", profiles=(), queue_waiting=0, queue_running=0,
                          queue_capacity=1)
    families = parse(PrometheusMetrics().render(gauges))
    assert "fake_metric" not in families
    assert value(families, "edged_model_info", model='evil"} 1\nfake_metric 2') == 1
    assert value(families, "edged_build_info", version='1"\n\\') == 1
    assert value(families, "edged_model_state", state="loading") == 1
    for absent in ("edged_cpu_temperature_celsius", "edged_power_watts", "edged_mqtt_connected", "edged_throttled",
                   "edged_telemetry_spool_messages", "edged_energy_joules"):
        assert absent not in families


def test_outcome_labels_are_bounded() -> None:
    metrics = PrometheusMetrics()
    for i in range(500):
        metrics.on_request(summary(outcome=f"weird{i}"))
    families = parse(metrics.render(GAUGES))
    assert len(families["edged_requests"].samples) <= 65  # type: ignore[attr-defined]


def test_every_metric_is_listed_in_protocol_md() -> None:
    from pathlib import Path

    from edged.prometheus import metric_names

    docs = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    metrics = PrometheusMetrics()
    metrics.on_request(summary())
    missing = [name for name in metric_names(metrics.render(GAUGES)) if f"`{name}`" not in docs]
    assert not missing, f"list these metrics in docs/protocol.md: {missing}"
