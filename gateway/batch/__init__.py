"""Batch prediction: records from a file through the gateway (or a v2 server), one output per
record in input order, resumable after a crash."""
