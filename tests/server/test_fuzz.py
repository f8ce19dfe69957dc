"""Fuzz the API against its own /openapi.json: no input may produce a 5xx.

Runs on PostgreSQL + S3 as well as SQLite, because bad input reaches the two
databases differently (NUL bytes, integer ranges, JSONB).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from _server_support import make_backend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def fuzz_server(request, tmp_path_factory):
    backend = make_backend(request.param, tmp_path_factory.mktemp("fuzz"), request)
    server = backend.start_server()
    # A few experiments, so generated ids (small integers) often hit a real one.
    for i in range(3):
        exp_id = httpx.post(server.url + "/api/v1/experiments", json={"prefix": f"p/r{i}"}).json()["id"]
        httpx.post(
            f"{server.url}/api/v1/experiments/{exp_id}/metrics",
            json={"series": [{"name": "a", "start_index": 0, "points": [[1, {"v": 1}]]}]},
        )
    yield server
    backend.stop()


@pytest.fixture
def api_schema(fuzz_server):
    loaded = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    # Valid and deliberately invalid requests, NUL bytes included.
    loaded.config.generation.update(modes=list(schemathesis.GenerationMode), allow_x00=True)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_makes_the_server_fail(case, fuzz_server):
    case.call_and_validate(base_url=fuzz_server.url, timeout=30, checks=[not_a_server_error])
