"""Training one network: the LightningModule and its network, divergence, CPU threads,
devices and ranks, checkpoints and the console. Knows nothing of MLflow or Hydra."""
