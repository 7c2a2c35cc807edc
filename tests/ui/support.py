"""Driving the dashboard over HTTP as a browser would: its pages, their forms and cookies."""

from __future__ import annotations

import html
import re

import httpx

from tests.support.executions_api import until_status

ASYNC = {"Prefer": "respond-async"}
RETRY_FAST = {
    "retry_base_seconds": 0.01,
    "retry_cap_seconds": 0.02,
    "retry_max_attempts": 1,
    "delivery_poll_seconds": 0.05,
}


def field(page: str, name: str) -> str:
    """The value of the first hidden field called `name` on a page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no field {name!r} on the page"
    return html.unescape(match.group(1))


def text_of(page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


async def sign_in(client: httpx.AsyncClient, api_key: str, *, base: str = "/ui") -> str:
    """Sign in through the sign-in page; returns the session's form token."""
    page = await client.get(base)
    assert page.status_code == 200, page.text
    signed = await client.post(
        f"{base}/sign-in", data={"form_token": field(page.text, "form_token"), "api_key": api_key}
    )
    assert signed.status_code == 303, signed.text
    home = await client.get(f"{base}/")
    assert home.status_code == 200, home.text
    return field(home.text, "form_token")


async def dead_letter(client: httpx.AsyncClient, key: str, path: str = "fail") -> None:
    """An async trigger whose one attempt fails: a dead letter (the client sends its API key;
    the dashboard heeds only its cookie)."""
    accepted = await client.post(
        f"/webhook/{path}", json={"key": key}, headers={**ASYNC, "Idempotency-Key": key}
    )
    assert accepted.status_code == 202, accepted.text
    await until_status(client, key, "failed")
