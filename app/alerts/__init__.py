"""Alerts (GATE_ALERT_URL): an operator is told when an execution becomes a dead letter or ends
with its outcome unknown. The database queues each alert in the transaction that ends the
execution (a trigger on executions); the delivery workers send it, signed, with backoff
(docs/alerts.md)."""
