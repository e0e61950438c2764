"""Telemetry: metric definitions per process kind, the store collector, the dashboard summary."""
