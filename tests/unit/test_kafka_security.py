"""Kafka TLS and SASL for production: the HOOKFLEET_KAFKA_* settings reach every client's librdkafka
configuration, refuse a half-configured set with a message naming the setting, and the password never shows
in a settings print, a repr, an error or a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from confluent_kafka import KafkaException
from pydantic import ValidationError

from hookfleet import kafka
from hookfleet.cli import main
from hookfleet.kafka import KafkaProducer, client_config, consumer_config
from hookfleet.settings import KafkaSecuritySettings, RecorderSettings

PASSWORD = "pw-7c1e9f"  # short: pydantic shortens a long input in its error text, which would hide a leak
KEY_PASSWORD = "kp-3a8d"
SASL_SSL = {
    "HOOKFLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "HOOKFLEET_KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.pem",
    "HOOKFLEET_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "HOOKFLEET_KAFKA_SASL_USERNAME": "hookfleet",
    "HOOKFLEET_KAFKA_SASL_PASSWORD": PASSWORD,
}


@pytest.fixture
def secured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in SASL_SSL.items():
        monkeypatch.setenv(name, value)
    kafka.security_config.cache_clear()
    yield
    kafka.security_config.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    kafka.security_config.cache_clear()
    yield
    kafka.security_config.cache_clear()


def test_every_client_config_carries_the_security_options(secured: None) -> None:
    expected = {
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "hookfleet",
        "sasl.password": PASSWORD,
    }
    for config in (client_config("kafka:9093"), consumer_config("kafka:9093", "hookfleet-recorder")):
        assert {k: config[k] for k in expected} == expected
        assert config["bootstrap.servers"] == "kafka:9093"


def test_a_real_producer_is_built_with_them_and_the_password_is_never_logged(
    secured: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka accepts the options as given: a misspelt key or value, or a CA file it cannot read, raises
    here (naming the option, never the password)."""
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    monkeypatch.setenv("HOOKFLEET_KAFKA_SSL_CA_LOCATION", str(ca))
    kafka.security_config.cache_clear()
    caplog.set_level(logging.DEBUG)
    producer = KafkaProducer("127.0.0.1:1")
    producer.close(timeout_s=0.1)
    assert PASSWORD not in caplog.text

    monkeypatch.setenv("HOOKFLEET_KAFKA_SSL_CA_LOCATION", str(tmp_path / "missing.pem"))
    kafka.security_config.cache_clear()
    with pytest.raises(KafkaException) as refused:
        KafkaProducer("127.0.0.1:1")
    assert "ssl.ca.location" in str(refused.value) and PASSWORD not in str(refused.value)


def test_the_default_is_the_local_stacks_plaintext() -> None:
    config = client_config("127.0.0.1:19092")
    assert config["security.protocol"] == "plaintext"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


def test_printing_settings_masks_the_passwords(
    secured: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOOKFLEET_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HOOKFLEET_KAFKA_SSL_CERTIFICATE_LOCATION", "/etc/kafka/client.pem")
    monkeypatch.setenv("HOOKFLEET_KAFKA_SSL_KEY_LOCATION", "/etc/kafka/client.key")
    monkeypatch.setenv("HOOKFLEET_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
    monkeypatch.setenv("HOOKFLEET_SECRET_KEY", "x" * 44)
    for role in ("dispatcher", "recorder", "retry-scheduler", "api", "topics"):
        assert main(["settings", role]) == 0
        printed = capsys.readouterr().out
        assert "kafka_sasl_username='hookfleet'" in printed, role
        assert PASSWORD not in printed and KEY_PASSWORD not in printed, role
    for settings in (RecorderSettings(), KafkaSecuritySettings()):
        assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
        assert PASSWORD not in repr(settings.model_dump())


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HOOKFLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HOOKFLEET_KAFKA_SASL_USERNAME": "u"}, "SASL_MECHANISM"),
        ({"HOOKFLEET_KAFKA_SASL_PASSWORD": PASSWORD}, "HOOKFLEET_KAFKA_SASL_PASSWORD set but"),
        ({"HOOKFLEET_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem"}, "HOOKFLEET_KAFKA_SSL_CA_LOCATION set but"),
        ({"HOOKFLEET_KAFKA_SECURITY_PROTOCOL": "SSL", "HOOKFLEET_KAFKA_SSL_KEY_LOCATION": "/k"}, "go together"),
        ({"HOOKFLEET_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka_security_protocol"),
    ],
    ids=["sasl-without-mechanism", "password-without-sasl", "ca-without-tls", "key-without-cert", "unknown"],
)
def test_a_half_configured_set_is_refused_naming_the_setting_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for settings in (KafkaSecuritySettings, RecorderSettings):
        with pytest.raises(ValidationError) as refused:
            settings()
        assert named in str(refused.value)
        assert PASSWORD not in str(refused.value), "a settings error echoes its input"
