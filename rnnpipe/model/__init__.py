"""The model: what the served pyfunc needs (tokenizers and encoding in `text`, the `vocabulary`,
the `network` with rnnpipe's `lstm` layers, the raw-text `classifier`, all on Keras from
`backend`) plus what only training needs (`training`, pretrained `embeddings`). Imports nothing
from the pipeline's steps, config or tracking."""
