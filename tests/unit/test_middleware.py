"""The API's ASGI middleware, in process: the body limit answers 413 problem details (declared or
chunked bodies alike), and every request is counted under its route template, never a concrete path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY

from hub.api import metrics, problem
from hub.api.bodylimit import BodyLimit

LIMIT = 1000


def app() -> FastAPI:
    api = FastAPI()
    problem.install(api)
    metrics.install(api)
    api.add_middleware(BodyLimit, max_body_bytes=LIMIT)

    @api.post("/v1/echo/{item_id}")
    async def echo(item_id: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @api.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    return api


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app(), raise_app_exceptions=False), base_url="http://t"
    )


def count(route: str, status: str, method: str = "POST") -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("qixin_api_requests_total", labels) or 0.0


async def test_a_declared_length_over_the_limit_is_413_before_the_app_runs() -> None:
    async with client() as c:
        answer = await c.post("/v1/echo/1", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json() == {
        "type": problem.PROBLEM_BASE + "payload-too-large",
        "title": "payload too large",
        "status": 413,
        "detail": f"the body is {LIMIT + 1} bytes; the limit is {LIMIT}",
        "instance": "/v1/echo/1",
        "code": "payload-too-large",
    }


async def test_a_chunked_body_over_the_limit_is_413_too() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 400

    async with client() as c:
        answer = await c.post("/v1/echo/1", content=chunks())
        assert answer.status_code == 413
        assert answer.json()["code"] == "payload-too-large"
        within = await c.post("/v1/echo/1", content=b"x" * LIMIT)
    assert within.status_code == 200
    assert within.json() == {"bytes": LIMIT}


async def test_requests_are_counted_by_route_template_and_status() -> None:
    before_ok = count("/v1/echo/{item_id}", "200")
    before_404 = count("unmatched", "404", "GET")
    before_500 = count("/v1/boom", "500", "GET")
    async with client() as c:
        assert (await c.post("/v1/echo/ref-123", content=b"{}")).status_code == 200
        assert (await c.get("/v1/nowhere")).status_code == 404
        assert (await c.get("/v1/boom")).status_code == 500
    assert count("/v1/echo/{item_id}", "200") == before_ok + 1
    assert count("unmatched", "404", "GET") == before_404 + 1
    assert count("/v1/boom", "500", "GET") == before_500 + 1
    exposed = REGISTRY.get_sample_value  # no concrete ids in any label
    assert (
        exposed("qixin_api_requests_total", {"method": "POST", "route": "/v1/echo/ref-123", "status": "200"})
        is None
    )
