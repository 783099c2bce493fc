"""Expert selection: embeddings, the kNN proxy and ranking."""
