"""denselab's Hydra plugins: the Optuna sweeper (hydra/sweeper=optuna)."""
