"""Assertions on RFC 9457 answers."""

from __future__ import annotations

from typing import Any

import httpx

from app.errors import PROBLEM_TYPE_BASE


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + slug
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem
