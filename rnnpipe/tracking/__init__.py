"""MLflow, the system of record: the store and its retrying client (`store`), runs and their
provenance (`runs`), the registry and its promotion gate (`registry`)."""
