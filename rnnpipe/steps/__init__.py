"""The pipeline's steps, one module (and one DVC stage) each: ingest → vocab → train → evaluate.
Each has a `main(params)` that reads its `params.yaml` section and writes its outputs; no step
imports another."""
