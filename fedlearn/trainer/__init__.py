"""The stream trainer: shard ownership, applying batches exactly once, the event log writer
and the telemetry publisher."""
