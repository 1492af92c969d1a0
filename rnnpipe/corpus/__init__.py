"""The corpus: where it comes from (`sources`), how it is read as a stream (`readers`; archives
in place: `archives`, `members`), and how it is cleaned and split on a few bytes per document
(`split`). Plain functions over paths and `IngestParams`; the ingest step (`rnnpipe.steps.ingest`)
puts them together."""
