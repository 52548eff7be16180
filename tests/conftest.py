"""Fixtures for the real broker and the real database.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` when set; else testcontainers
when a Docker engine answers; else the local stack (deploy/local), started if it is not running.
Every test gets its own topics (a unique prefix) and its own PostgreSQL schema, so tests never see each
other's messages or rows.
"""

from __future__ import annotations

import ast
import gc
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from hookfleet.db import migrate
from hookfleet.kafka import KafkaProducer, TopicSpec, delete_topics, ensure_topics
from schemas.topics import Topics

if TYPE_CHECKING:
    from tests.support.api_client import RunningApi

TEST_PARTITIONS = 3

if sys.version_info[:2] == (3, 11):
    # CPython 3.11 keeps the AST constructor's recursion counter per interpreter (gh-106905). A second
    # ast.parse that starts while one is building its tree fails the first with "SystemError: AST
    # constructor recursion depth mismatch": another thread (a server thread formatting a traceback,
    # which parses source for its carets), or the same thread when a garbage collection inside the
    # parse finalises an unclosed socket and pytest's unraisable hook formats that traceback. Parses
    # take turns, with the collector held off for the duration.
    _ast_parse = ast.parse
    _ast_lock = threading.RLock()  # re-entry fails loudly (the SystemError) rather than deadlocking

    def _parse_in_turn(*args: Any, **kwargs: Any) -> Any:
        with _ast_lock:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return _ast_parse(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    ast.parse = _parse_in_turn


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


@pytest.fixture(scope="session")
def _docker() -> bool:
    return os.environ.get("HOOKFLEET_TEST_NO_DOCKER") != "1" and _docker_engine_answers()


@pytest.fixture(scope="session")
def kafka_bootstrap(_docker: bool) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif _docker:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        from devstack import stack as devstack

        devstack.up()
        yield f"127.0.0.1:{devstack.KAFKA_PORT}"


@pytest.fixture(scope="session")
def database_root_url(_docker: bool) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif _docker:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        from devstack import stack as devstack
        from hookfleet.settings import LOCAL_DATABASE_URL

        devstack.up()
        yield LOCAL_DATABASE_URL


def with_search_path(url: str, schema: str) -> str:
    """A conninfo whose sessions see only `schema` (plus pg_catalog)."""
    return psycopg.conninfo.make_conninfo(url, options=f"-c search_path={schema}")


@pytest.fixture
def database_url(database_root_url: str) -> Iterator[str]:
    """A freshly migrated private schema for this test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_root_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_search_path(database_root_url, schema)
    migrate(url)
    yield url
    with psycopg.connect(database_root_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    """An idempotent producer on the test broker, flushed and closed after the test."""
    producer = KafkaProducer(kafka_bootstrap)
    yield producer
    producer.close()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """Every hookfleet topic under a prefix unique to this test."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    names = Topics.with_prefix(prefix)
    ensure_topics(kafka_bootstrap, [TopicSpec(n, TEST_PARTITIONS, 1, {}) for n in names.all()])
    yield names
    delete_topics(kafka_bootstrap, names.all())


# ----------------------------------------------------------------------------- HTTPS receivers and roles


@pytest.fixture(scope="session")
def tls_ca():
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(tls_ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def receiver(tls_ca):
    from tests.support.receiver import HttpsReceiver

    server = HttpsReceiver(tls_ca).start()
    yield server
    server.stop()


@pytest.fixture
def fleet_env(kafka_bootstrap: str, database_url: str, topics: Topics, ca_bundle: str) -> dict[str, str]:
    """Environment for `hookfleet <role>` subprocesses bound to this test's topics and schema."""
    from tests.support.fleet import TEST_SECRET_KEY

    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "HOOKFLEET_TOPIC_PREFIX": topics.prefix,
        "HOOKFLEET_SECRET_KEY": TEST_SECRET_KEY,
        "HOOKFLEET_ALLOW_NETWORKS": "127.0.0.0/8,::1/128",
        "HOOKFLEET_CA_BUNDLE": ca_bundle,
        "HOOKFLEET_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def fleet(fleet_env: dict[str, str], tmp_path, request):
    from tests.support.fleet import Fleet

    running = Fleet(fleet_env, tmp_path)
    yield running
    running.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(running.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    """A real API server on this test's database. A module that needs other API settings (its own topics,
    rates, retention) defines its own `api`, which takes precedence. Imported here, not at the top: unit
    runs would otherwise load the whole API for nothing."""
    from tests.support.api_client import RunningApi, api_settings

    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle)) as running:
        yield running


@pytest.fixture
def key(api: RunningApi) -> str:
    """The API key of account `acct_a` ("Acme")."""
    return api.account("Acme", "acct_a")[1]
