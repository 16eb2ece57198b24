"""A sweep (``denselab-train -m``) as one thing in MLflow: the parent run, a job's run, the
summary, the Hydra hooks around the jobs, SLURM."""

# The parent run's id, which the launching process leaves to the jobs in their environment.
# Here, where importing it costs nothing: a job checks it before anything heavy is loaded.
SWEEP_ENV = "DENSELAB_SWEEP_RUN_ID"
