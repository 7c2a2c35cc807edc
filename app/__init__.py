"""n8n-gate: exactly-once triggers for n8n webhooks.

The one thing done at import, before any module of the package loads: prometheus-client decides
when it is first imported, from PROMETHEUS_MULTIPROC_DIR, whether metric values live in files
(multiprocess mode). Only the worker processes of `n8n-gate serve --workers N` (N > 1) may keep
them there, in the directory serve names for them; every other process (the CLI, serve's
supervisor, a single serving process, the tests) keeps them in memory, whatever the environment
says. An operator's PROMETHEUS_MULTIPROC_DIR is taken as serve's choice of directory instead
(app/cli.py), so the supervisor never writes files there before emptying it.
"""

import os as _os

WORKERS_METRICS_DIR_VARIABLE = "N8N_GATE_WORKERS_METRICS_DIR"
OPERATOR_METRICS_DIR = _os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None) or None
if _os.environ.get(WORKERS_METRICS_DIR_VARIABLE):
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _os.environ[WORKERS_METRICS_DIR_VARIABLE]
