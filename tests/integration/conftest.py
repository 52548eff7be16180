"""Fixtures shared by the API's integration tests: a real API server on the test's database, and the key
of one account in it. A module that needs other API settings (its own topics, rates, retention) defines
its own `api`, which takes precedence here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.api_client import RunningApi, api_settings


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle)) as running:
        yield running


@pytest.fixture
def key(api: RunningApi) -> str:
    """The API key of account `acct_a` ("Acme")."""
    return api.account("Acme", "acct_a")[1]
