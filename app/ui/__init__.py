"""The dashboard at /ui (docs/dashboard.md)."""
