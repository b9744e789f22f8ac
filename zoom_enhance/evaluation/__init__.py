"""Evaluation: metrics, the degradation protocol and its one scoring loop, reports, `eval` and `bench`."""
