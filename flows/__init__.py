"""Prefect flows: thin adapters that run rnnpipe's DVC stages as tasks."""
