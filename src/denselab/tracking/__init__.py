"""MLflow: the store (open, locks, servers), runs (create, hold, end), what a run is
compared by, the one run writer, stop signals and resume."""
