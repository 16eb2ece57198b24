"""Training one network: the LightningModule and its network, the Trainer and its
callbacks built from the run's config, divergence, CPU threads, devices and ranks,
checkpoints and the console. Knows nothing of MLflow's store or runs."""
