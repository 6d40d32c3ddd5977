"""Broker URL parsing: the accepted forms, and malformed or hostile input rejected with ConfigError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import ConfigError
from edged.mqtt.url import BrokerUrl, parse_broker_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt://broker", BrokerUrl("mqtt", "broker", 1883, None, None)),
        ("mqtts://broker", BrokerUrl("mqtts", "broker", 8883, None, None)),
        ("mqtt://127.0.0.1:18830", BrokerUrl("mqtt", "127.0.0.1", 18830, None, None)),
        ("MQTTS://Broker.Example.org:8884/", BrokerUrl("mqtts", "broker.example.org", 8884, None, None)),
        ("mqtt://dev-1@broker", BrokerUrl("mqtt", "broker", 1883, "dev-1", None)),
        ("mqtt://dev%201:p%40ss:w@broker:1", BrokerUrl("mqtt", "broker", 1, "dev 1", "p@ss:w")),
        ("mqtt://user:p@ss@broker", BrokerUrl("mqtt", "broker", 1883, "user", "p@ss")),
        ("mqtts://[::1]:8883", BrokerUrl("mqtts", "::1", 8883, None, None)),
        ("mqtt://[2001:DB8::1]", BrokerUrl("mqtt", "2001:db8::1", 1883, None, None)),
        ("mqtt://mqtt_broker:1883", BrokerUrl("mqtt", "mqtt_broker", 1883, None, None)),
        ("mqtt://user:@broker", BrokerUrl("mqtt", "broker", 1883, "user", "")),
    ],
)
def test_accepted_urls(text: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "broker:1883",
        "http://broker",
        "ws://broker:9001",
        "tcp://broker:1883",
        "mqtt:/broker",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://@broker",
        "mqtt://:pass@broker",
        "mqtt://broker:",
        "mqtt://broker:0",
        "mqtt://broker:65536",
        "mqtt://broker:99999999",
        "mqtt://broker:-1",
        "mqtt://broker:+80",
        "mqtt://broker:80a",
        "mqtt://broker:1883:1884",
        "mqtt://bro ker",
        " mqtt://broker",
        "mqtt://broker ",
        "mqtt://broker\n",
        "mqtt://bro\x00ker",
        "mqtt://broker\t:1883",
        "mqtt://broker/path",
        "mqtt://broker:1883/topic",
        "mqtt://broker?x=1",
        "mqtt://broker#frag",
        "mqtt://-broker",
        "mqtt://broker-.example",
        "mqtt://bro..ker",
        "mqtt://br*ker",
        "mqtt://bröker",
        "mqtt://999.1.1.1",
        "mqtt://1.2.3",
        "mqtt://[::1",
        "mqtt://[not-ipv6]:1883",
        "mqtt://[::1]x",
        "mqtt://%ff@broker",
        "mqtt://us%0Aer@broker",
        "mqtt://0",
        "mqtt://" + "a" * 64 + ".example",
        "mqtt://" + "a." * 600 + "b",
    ],
)
def test_rejected_urls(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_broker_url(text)


def test_port_error_does_not_echo_what_may_be_a_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_broker_url("mqtt://user:hunter2secret")  # the '@host' was forgotten
    assert "hunter2secret" not in str(caught.value)


def test_redacted_keeps_user_and_drops_password() -> None:
    broker = parse_broker_url("mqtts://dev:topsecret@[::1]:8884")
    assert broker.redacted() == "mqtts://dev@[::1]:8884"
    assert broker.tls


@given(st.text(max_size=80))
def test_any_text_is_parsed_or_rejected_with_config_error(text: str) -> None:
    try:
        broker = parse_broker_url(text)
    except ConfigError:
        return
    assert broker.scheme in ("mqtt", "mqtts")
    assert 1 <= broker.port <= 65535
    assert broker.host and not any(ch.isspace() for ch in broker.host)


@given(
    scheme=st.sampled_from(["mqtt", "mqtts"]),
    host=st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,5}){0,2}", fullmatch=True),
    port=st.integers(1, 65535),
)
def test_generated_urls_round_trip(scheme: str, host: str, port: int) -> None:
    broker = parse_broker_url(f"{scheme}://{host}:{port}")
    assert (broker.scheme, broker.port) == (scheme, port)
    assert broker.host == host
    assert parse_broker_url(broker.redacted()) == broker
