"""The shared data pipeline: corpus -> manifest (JSONL) -> features -> length-bucketed batches."""
