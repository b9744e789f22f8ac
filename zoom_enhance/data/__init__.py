"""Training data: photo sources, degradations and the deterministic example stream."""
