"""Static group membership: every consumer's `group.instance.id` is unique and stable, the setting is checked,
and a fenced consumer stops its role with a line naming the setting."""

from __future__ import annotations

import logging
import subprocess

import pytest
from pydantic import ValidationError

from dispatcher.processes import supervise
from hookfleet.cli import CliError
from hookfleet.kafka import BrokerState, consumer_config, new_consumer
from hookfleet.settings import DispatcherSettings, RecorderSettings, RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.membership import EXIT_FENCED, consumer_instance_id, exit_if_fenced, process_instance_id


def test_each_consumer_of_an_instance_has_its_own_id() -> None:
    ids = [
        consumer_instance_id("pod-a", "dispatcher", "fanout"),
        consumer_instance_id("pod-a", "dispatcher", "delivery"),
        consumer_instance_id("pod-a", "recorder"),
        consumer_instance_id("pod-a", "retry-scheduler"),
        consumer_instance_id(process_instance_id("pod-a", 0), "dispatcher", "fanout"),
        consumer_instance_id(process_instance_id("pod-a", 1), "dispatcher", "fanout"),
        consumer_instance_id("pod-b", "dispatcher", "fanout"),
    ]
    assert ids == [
        "pod-a.dispatcher.fanout",
        "pod-a.dispatcher.delivery",
        "pod-a.recorder",
        "pod-a.retry-scheduler",
        "pod-a.p0.dispatcher.fanout",
        "pod-a.p1.dispatcher.fanout",
        "pod-b.dispatcher.fanout",
    ]
    # stable: the same inputs give the same id (a restart is the same member)
    assert consumer_instance_id("pod-a", "dispatcher", "fanout") == ids[0]


def test_unset_means_dynamic_membership() -> None:
    assert consumer_instance_id(None, "dispatcher", "fanout") is None
    assert process_instance_id(None, 3) is None
    assert "group.instance.id" not in consumer_config("127.0.0.1:1", "g")
    consumer = new_consumer("127.0.0.1:1", "g")
    try:
        assert getattr(consumer, "static", None) is None
    finally:
        consumer.close()


def test_a_static_consumer_knows_its_group() -> None:
    consumer = new_consumer("127.0.0.1:1", "g", instance_id="pod-a.recorder")
    try:
        static = getattr(consumer, "static", None)
        assert static is not None
        assert (static.bootstrap, static.group_id, static.instance_id) == ("127.0.0.1:1", "g", "pod-a.recorder")
    finally:
        consumer.close()


@pytest.mark.parametrize("cls", [DispatcherSettings, RecorderSettings, RetrySchedulerSettings])
def test_every_consuming_role_reads_the_setting(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKFLEET_INSTANCE_ID", "hookfleet-dispatcher-7d9f8c6b5-x2x4q")
    assert cls().instance_id == "hookfleet-dispatcher-7d9f8c6b5-x2x4q"
    monkeypatch.setenv("HOOKFLEET_INSTANCE_ID", "")
    assert cls().instance_id is None
    monkeypatch.delenv("HOOKFLEET_INSTANCE_ID")
    assert cls().instance_id is None


@pytest.mark.parametrize(
    "value", ["pod a", "pod\nevent=forged", "pod'1", "-pod", ".pod", "pöd", "pod\t1", "pod=1", "x" * 201]
)
def test_a_bad_instance_id_is_refused_naming_the_setting(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKFLEET_INSTANCE_ID", value)
    with pytest.raises(ValidationError) as raised:
        DispatcherSettings()
    text = str(raised.value)
    assert "HOOKFLEET_INSTANCE_ID" in text
    assert "\nevent=forged" not in text  # the value is quoted (repr), never a raw line of its own


def test_the_longest_instance_id_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKFLEET_INSTANCE_ID", "a" * 200)
    assert DispatcherSettings().instance_id == "a" * 200


def test_processes_refuse_a_name_their_children_could_not_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--processes` children add `.p<k>`: refused before any child starts, naming the setting."""

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child was started")

    monkeypatch.setattr(subprocess, "Popen", no_child)
    with pytest.raises(CliError, match="HOOKFLEET_INSTANCE_ID is 198 characters long: with --processes 2"):
        supervise(2, 0, "a" * 198)


def test_a_fenced_consumer_stops_its_role_naming_the_setting_and_the_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shutdown = Shutdown()
    healthy, fenced = BrokerState("pod-a.dispatcher.fanout"), BrokerState("pod-a.dispatcher.delivery")
    assert not exit_if_fenced("dispatcher", [healthy, fenced], shutdown)
    fenced.fenced = True
    with caplog.at_level(logging.ERROR):
        assert exit_if_fenced("dispatcher", [healthy, fenced], shutdown)
    assert shutdown.requested.is_set() and shutdown.exit_code == EXIT_FENCED
    line = caplog.records[-1].getMessage()
    assert "event=consumer_fenced" in line
    assert "consumer=pod-a.dispatcher.delivery" in line and "HOOKFLEET_INSTANCE_ID" in line
    assert not exit_if_fenced("dispatcher", [fenced], shutdown)  # said once
