"""What n8n's answers mean, decided from their exact shape (no database, no network)."""

from __future__ import annotations

import json

import pytest

from app.forwarding.answers import Answer, AnswerKind, classify

HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"
EXPRESS_404 = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>Cannot POST /webhook/orders/42</pre>\n</body>\n</html>\n"
)


PATHS = ("/webhook/orders/42",)


def n8n_error(code: int, message: str, **more: str) -> bytes:
    return json.dumps({"code": code, "message": message, **more}).encode()


@pytest.mark.parametrize(
    ("status", "content_type", "body", "kind"),
    [
        (200, HTML, b"n8n is starting up. Please wait", AnswerKind.STARTING),
        (404, HTML, EXPRESS_404.encode(), AnswerKind.STARTING),
        (503, JSON, n8n_error(503, "Database is not ready!"), AnswerKind.STARTING),
        (
            404,
            JSON,
            n8n_error(404, 'The requested webhook "POST orders/42" is not registered.', hint="x"),
            AnswerKind.NOT_REGISTERED,
        ),
        (
            404,
            JSON,
            n8n_error(404, 'The requested webhook "orders/42" is not registered.'),
            AnswerKind.NOT_REGISTERED,
        ),
        (
            404,
            JSON,
            n8n_error(
                404,
                "This webhook is not registered for POST requests. "
                "Did you mean to make a GET request?",
            ),
            AnswerKind.WRONG_METHOD,
        ),
        (
            404,
            JSON,
            n8n_error(
                404,
                "This webhook is not registered for DELETE requests. "
                "Did you mean to make a GET, POST or PUT request?",
            ),
            AnswerKind.WRONG_METHOD,
        ),
        (500, JSON, b'{"message":"Error in workflow"}', AnswerKind.SERVER_ERROR),
        (
            500,
            JSON,
            n8n_error(0, "There was a problem executing the workflow"),
            AnswerKind.COULD_NOT_EXECUTE,
        ),
        (504, HTML, b"<html>504</html>", AnswerKind.PROXY_TIMEOUT),
        (524, HTML, b"<html>524</html>", AnswerKind.PROXY_TIMEOUT),
        (200, JSON, b'{"message":"Workflow was started"}', AnswerKind.WORKFLOW),
    ],
)
def test_n8n_s_own_answers_are_known_by_their_exact_shape(
    status: int, content_type: str, body: bytes, kind: AnswerKind
) -> None:
    answer = Answer(status=status, content_type=content_type, body=body)
    assert classify(answer, method="POST", paths=PATHS) is kind


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        # A workflow's own answers that merely look like n8n's pages.
        (404, JSON, b'{"message":"Customer 42 is not registered"}'),
        (404, JSON, n8n_error(404, "Order 42 is not registered.")),
        (404, JSON, b'{"error":"The requested webhook \\"POST x\\" is not registered."}'),
        (
            404,
            JSON,
            n8n_error(404, 'The requested webhook "POST x" is not registered.', order="42"),
        ),
        (200, HTML, b"<p>n8n is starting up. Please wait</p>"),
        (200, "text/plain", b"n8n is starting up. Please wait"),
        (404, HTML, EXPRESS_404.replace("POST /webhook/orders/42", "POST /other").encode()),
        (404, HTML, EXPRESS_404.replace("Cannot POST", "Cannot GET").encode()),
        (404, HTML, b"<html><body>No such order</body></html>"),
        (503, JSON, n8n_error(503, "Shop is closed")),
        (500, JSON, b'{"message":"There was a problem executing the workflow"}'),
        (429, JSON, b'{"message":"slow down"}'),
    ],
)
def test_a_workflow_s_answer_is_its_own_however_it_looks(
    status: int, content_type: str, body: bytes
) -> None:
    answer = Answer(status=status, content_type=content_type, body=body)
    kind = classify(answer, method="POST", paths=PATHS)
    expected = AnswerKind.SERVER_ERROR if status >= 500 else AnswerKind.WORKFLOW
    assert kind is expected


def express_404(method: str, path: str) -> bytes:
    return EXPRESS_404.replace("POST /webhook/orders/42", f"{method} {path}").encode()


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        # To HEAD n8n's pages come without their body: known by the length they declare.
        (Answer(200, HTML, b"", content_length=31), AnswerKind.STARTING),
        (Answer(200, HTML, b"", content_length=30), AnswerKind.WORKFLOW),
        (
            Answer(404, HTML, b"", content_length=len(express_404("HEAD", "/webhook/orders/42"))),
            AnswerKind.STARTING,
        ),
        (Answer(404, HTML, b"", content_length=17), AnswerKind.WORKFLOW),
        (Answer(404, JSON, b"", content_length=356), AnswerKind.NOT_REGISTERED),
        (Answer(403, None, b"", authenticate='Basic realm="Webhook"'), AnswerKind.REFUSED),
        (Answer(403, None, b""), AnswerKind.WORKFLOW),
    ],
)
def test_n8n_s_answers_to_head_are_known_without_a_body(answer: Answer, kind: AnswerKind) -> None:
    assert classify(answer, method="HEAD", paths=PATHS) is kind


@pytest.mark.parametrize(
    "body",
    [
        b"Authorization is required!",
        b"Authorization data is wrong!",
        b"IP is not allowed to access the webhook!",
    ],
)
def test_the_webhook_node_refusing_a_caller_is_n8n_s_answer(body: bytes) -> None:
    status = 401 if b"required" in body else 403
    assert classify(Answer(status, None, body), method="POST", paths=PATHS) is AnswerKind.REFUSED
    # The same words as a workflow's JSON answer are the workflow's.
    as_json = Answer(status, JSON, json.dumps({"message": body.decode()}).encode())
    assert classify(as_json, method="POST", paths=PATHS) is AnswerKind.WORKFLOW


def test_node_refusing_a_request_head_is_n8n_s_answer() -> None:
    assert classify(Answer(431, None, b""), method="POST", paths=PATHS) is AnswerKind.REFUSED


def test_express_s_page_is_known_behind_a_proxy_that_strips_the_base_path() -> None:
    """N8N_BASE_URL http://proxy/n8n: the gateway sends /n8n/webhook/x, n8n sees /webhook/x."""
    page = Answer(404, HTML, express_404("POST", "/webhook/x"))
    paths = ("/n8n/webhook/x", "/webhook/x")
    assert classify(page, method="POST", paths=paths) is AnswerKind.STARTING


def test_express_s_page_names_the_path_html_escaped() -> None:
    path = "/webhook/o'brien&co"
    page = Answer(404, HTML, express_404("POST", "/webhook/o&#39;brien&amp;co"))
    assert classify(page, method="POST", paths=(path,)) is AnswerKind.STARTING
