"""A real n8n on loopback for the suite: installed by scripts/install-n8n (pinned, from the npm
registry, cached outside the repository), its workflows imported and published through its
CLI, its executions counted from its own SQLite database (shared/reference/real-n8n.md).

Workflow "gate-tests" holds one Webhook node per behaviour the gateway must keep intact:
    POST echo       When Last Node Finishes: the webhook's item (headers, query, body)
    POST started    Immediately: {"message": "Workflow was started"}
    POST respond    Respond to Webhook: 201, JSON, X-Execution-Id: <n8n's execution id>
    POST redirect   Respond to Webhook: a redirect with its own Location
    POST customer   Respond to Webhook: 404 {"message": "Customer 42 is not registered"}
    POST page       Respond to Webhook: a 200 text/html page of the workflow's own
    POST slow       a Wait node (3 s), then the item
    POST fail       Stop and Error: the workflow fails (500 "Error in workflow")
    POST binary     Convert to File from the body's base64 `data`, answered as binary
    POST guarded    Header Auth on Authorization (`Bearer hook-secret`), then the item
    GET  lookup     When Last Node Finishes, GET only
    HEAD probe      Immediately, HEAD only
    POST verified   Raw Body, then docs/verify-in-n8n.md's Code node with SIGNING_SECRET: the
                    gateway's signature verified, or the workflow fails
Workflow "late" (POST late, echo) is imported but not published until a test publishes it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import ROOT, free_port

N8N_VERSION = "2.40.7"
_KEY = re.compile(r"key-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GATE_TESTS_ID = "gateTests0000001"
LATE_ID = "gateLate00000001"
SLOW_SECONDS = 3
REDIRECT_TO = "https://shop.example/thanks"
PAGE = "<html><body><p>n8n is starting up. Please wait</p></body></html>"
HOOK_SECRET = "Bearer hook-secret"
_CREDENTIAL = {"id": "gateHeaderAuth01", "name": "gate header auth"}
# The signing secret of the tenant the recipe test sets up (32 bytes, base64).
SIGNING_SECRET = "whsec_" + base64.b64encode(b"n8n-gate recipe test secret 32b!").decode()
RECIPE = ROOT / "docs" / "verify-in-n8n.md"


def install() -> Path:
    """The installed n8n's directory; fails loudly when the install cannot be had."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-n8n")],
        capture_output=True,
        text=True,
        env={**os.environ, "N8N_VERSION": N8N_VERSION},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/install-n8n failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class RealN8n:
    def __init__(self, install_dir: Path, home: Path) -> None:
        self._n8n = install_dir / "bin" / "n8n"
        self.home = home
        self.port = free_port()
        self._broker_port = free_port()  # n8n's task broker listens too (5679 by default)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self._log = home / "n8n.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("N8N_", "DB_"))},
            "N8N_USER_FOLDER": str(self.home),
            "N8N_PORT": str(self.port),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_RUNNERS_BROKER_PORT": str(self._broker_port),
            "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_ENCRYPTION_KEY": "n8n-gate-test-encryption-key",
            "DB_TYPE": "sqlite",
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            "N8N_PERSONALIZATION_ENABLED": "false",
            "N8N_COMMUNITY_PACKAGES_ENABLED": "false",
            "N8N_SECURE_COOKIE": "false",
            "EXECUTIONS_DATA_SAVE_ON_SUCCESS": "all",
            "N8N_LOG_LEVEL": "info",  # in its log file, for when a start fails
            "N8N_GRACEFUL_SHUTDOWN_TIMEOUT": "15",
            # As n8n's image runs it: in development n8n adds a stack trace to its errors.
            "NODE_ENV": "production",
            # docs/verify-in-n8n.md: the Code node verifying the gateway's signature needs it.
            "NODE_FUNCTION_ALLOW_BUILTIN": "crypto",
        }

    def cli(self, *args: str) -> None:
        done = subprocess.run(
            [str(self._n8n), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"n8n {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def import_workflows(self) -> None:
        credentials = self.home / "credentials.json"
        credentials.write_text(json.dumps([header_auth_credential()]))
        self.cli("import:credentials", f"--input={credentials}")
        path = self.home / "workflows.json"
        path.write_text(json.dumps([gate_tests_workflow(), late_workflow()]))
        self.cli("import:workflow", f"--input={path}")
        self.publish(GATE_TESTS_ID)

    def publish(self, workflow_id: str) -> None:
        """Activates a workflow; a running n8n picks it up at its next start."""
        self.cli("publish:workflow", f"--id={workflow_id}")

    def start(self, *, wait: bool = True) -> None:
        assert self.process is None or self.process.poll() is not None
        with self._log.open("a") as log:
            log.write(f"\n==== n8n-gate tests: n8n start at {time.strftime('%H:%M:%S')}\n")
            self.process = subprocess.Popen(
                [str(self._n8n), "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def ensure_running(self) -> None:
        """After a test that left it stopped (or a start that failed): running again."""
        if self.process is None or self.process.poll() is not None:
            self.start()

    def wait_ready(self, within: float = 120.0) -> None:
        """Until its webhooks answer (readiness alone comes before they are registered)."""
        deadline = time.monotonic() + within
        while True:
            assert self.process is not None
            assert self.process.poll() is None, f"n8n exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"n8n did not start:\n{self.output()}"
            try:
                if httpx.get(f"{self.base_url}/webhook/lookup", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 25.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)  # n8n's own children too
        try:
            self.process.wait(within)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def output(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    def runs_for(self, key: str) -> int:
        """Executions whose data holds `key` (the webhook's item carries the request's
        headers, Idempotency-Key included), from n8n's own database."""
        rows = self._query("SELECT count(*) FROM execution_data WHERE instr(data, ?) > 0", key)
        return int(rows[0][0])

    def runs_by_key(self, keys: list[str]) -> dict[str, int]:
        """`runs_for` of many keys made by tests.support.executions_api.new_key, in one read."""
        wanted, runs = set(keys), dict.fromkeys(keys, 0)
        for (data,) in self._query("SELECT data FROM execution_data"):
            for key in set(_KEY.findall(data)) & wanted:
                runs[key] += 1
        return runs

    def settled_runs_for(self, keys: list[str], *, within: float = 30.0) -> dict[str, int]:
        """Runs per key once every key has at least one (n8n saves an execution after its
        answer, and after an "Immediately" answer the workflow still runs)."""
        deadline = time.monotonic() + within
        while True:
            runs = self.runs_by_key(keys)
            if all(runs.values()) or time.monotonic() > deadline:
                time.sleep(0.5)  # a late duplicate would land about now
                return self.runs_by_key(keys)
            time.sleep(0.1)

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        uri = f"file:{self.home / '.n8n' / 'database.sqlite'}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=10)
        try:  # `with` would commit, not close (Python 3.13 warns of it)
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def _webhook(name: str, method: str, mode: str, *, y: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"n8n-gate/{name}")),
        "name": f"hook {name}",
        "type": "n8n-nodes-base.webhook",
        "typeVersion": 2,
        "position": [0, y],
        "webhookId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"n8n-gate/webhook/{name}")),
        "parameters": {"path": name, "httpMethod": method, "responseMode": mode, "options": {}},
    }


def _node(name: str, node_type: str, parameters: dict[str, Any], *, y: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"n8n-gate/node/{name}")),
        "name": name,
        "type": node_type,
        "typeVersion": _TYPE_VERSIONS[node_type],
        "position": [300, y],
        "parameters": parameters,
    }


_TYPE_VERSIONS = {
    "n8n-nodes-base.code": 2,
    "n8n-nodes-base.convertToFile": 1.1,
    "n8n-nodes-base.respondToWebhook": 1.1,
    "n8n-nodes-base.wait": 1.1,
    "n8n-nodes-base.stopAndError": 1,
}


def _respond(name: str, *, y: int, **parameters: Any) -> dict[str, Any]:
    return _node(name, "n8n-nodes-base.respondToWebhook", parameters, y=y)


def gate_tests_workflow() -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    connections: dict[str, Any] = {}

    def add(hook: dict[str, Any], after: dict[str, Any] | None = None) -> None:
        nodes.append(hook)
        if after is not None:
            nodes.append(after)
            connections[hook["name"]] = {
                "main": [[{"node": after["name"], "type": "main", "index": 0}]]
            }

    add(_webhook("echo", "POST", "lastNode", y=0))
    add(_webhook("started", "POST", "onReceived", y=100))
    add(
        _webhook("respond", "POST", "responseNode", y=200),
        _respond(
            "respond 201",
            y=200,
            respondWith="json",
            responseBody="={{ JSON.stringify({ ok: true, order: $json.body.order }) }}",
            options={
                "responseCode": 201,
                "responseHeaders": {
                    "entries": [{"name": "X-Execution-Id", "value": "={{ $execution.id }}"}]
                },
            },
        ),
    )
    add(
        _webhook("redirect", "POST", "responseNode", y=300),
        _respond("respond redirect", y=300, respondWith="redirect", redirectURL=REDIRECT_TO),
    )
    add(
        _webhook("customer", "POST", "responseNode", y=400),
        _respond(
            "respond customer",
            y=400,
            respondWith="json",
            responseBody='{"message": "Customer 42 is not registered"}',
            options={"responseCode": 404},
        ),
    )
    add(
        _webhook("page", "POST", "responseNode", y=500),
        _respond(
            "respond page",
            y=500,
            respondWith="text",
            responseBody=PAGE,
            options={
                "responseHeaders": {
                    "entries": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}]
                }
            },
        ),
    )
    add(
        _webhook("slow", "POST", "lastNode", y=600),
        _node(
            "wait",
            "n8n-nodes-base.wait",
            {"resume": "timeInterval", "amount": SLOW_SECONDS, "unit": "seconds"},
            y=600,
        ),
    )
    add(
        _webhook("fail", "POST", "lastNode", y=700),
        _node("stop", "n8n-nodes-base.stopAndError", {"errorMessage": "boom"}, y=700),
    )
    binary = _webhook("binary", "POST", "responseNode", y=1000)
    to_file = _node(
        "to file",
        "n8n-nodes-base.convertToFile",
        {
            "operation": "toBinary",
            "sourceProperty": "body.data",
            "options": {"mimeType": "application/octet-stream", "fileName": "bytes.bin"},
        },
        y=1000,
    )
    answer_file = _respond("respond binary", y=1100, respondWith="binary")
    nodes.extend([binary, to_file, answer_file])
    connections[binary["name"]] = {"main": [[{"node": "to file", "type": "main", "index": 0}]]}
    connections["to file"] = {"main": [[{"node": "respond binary", "type": "main", "index": 0}]]}
    guarded = _webhook("guarded", "POST", "lastNode", y=1200)
    guarded["parameters"]["authentication"] = "headerAuth"
    guarded["credentials"] = {"httpHeaderAuth": _CREDENTIAL}
    add(guarded)
    verified = _webhook("verified", "POST", "lastNode", y=1300)
    verified["parameters"]["options"] = {"rawBody": True}
    add(verified, _node("verify", "n8n-nodes-base.code", {"jsCode": recipe_code()}, y=1300))
    add(_webhook("lookup", "GET", "lastNode", y=800))
    add(_webhook("probe", "HEAD", "onReceived", y=900))
    return _workflow(GATE_TESTS_ID, "gate-tests", nodes, connections)


def recipe_code() -> str:
    """The Code node of docs/verify-in-n8n.md, as documented, with the test's secret."""
    code = re.search(r"```js\n(.*?)```", RECIPE.read_text(), flags=re.DOTALL)
    assert code is not None, f"no js block in {RECIPE}"
    return code.group(1).replace("whsec_PASTE_YOURS_HERE", SIGNING_SECRET)


def header_auth_credential() -> dict[str, Any]:
    return {
        **_CREDENTIAL,
        "type": "httpHeaderAuth",
        "data": {"name": "Authorization", "value": HOOK_SECRET},
    }


def late_workflow() -> dict[str, Any]:
    return _workflow(LATE_ID, "late", [_webhook("late", "POST", "lastNode", y=0)], {})


def _workflow(
    workflow_id: str, name: str, nodes: list[dict[str, Any]], connections: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "name": name,
        "active": False,
        "nodes": nodes,
        "connections": connections,
        "settings": {"executionOrder": "v1"},
    }
