"""A sweep (``denselab-train -m``) as one thing in MLflow: the parent run, a job's run, the
summary, the Hydra hooks around the jobs, SLURM."""
