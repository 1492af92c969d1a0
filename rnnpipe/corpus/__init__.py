"""The corpus: where it comes from (`sources`), how it is read (`readers`, `archives`), and how it
is cleaned and split (`split`). Plain functions over paths and `IngestParams`; the ingest step
(`rnnpipe.steps.ingest`) puts them together."""
