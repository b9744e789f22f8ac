"""Photo libraries beyond one process: the ledger that makes a run resumable (ledger.py), the Beam
transform and model handler (transform.py, the `beam` extra), and `enhance-library` (run.py)."""
