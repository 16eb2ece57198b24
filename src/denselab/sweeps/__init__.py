"""A sweep (``denselab-train -m``) as one thing in MLflow: the parent run, a job's run, the
summary, the Hydra hooks around the jobs, the Optuna search, SLURM."""

# The parent run's id, which the launching process leaves to the jobs in their environment.
# Here, where importing it costs nothing: a job checks it before anything heavy is loaded.
SWEEP_ENV = "DENSELAB_SWEEP_RUN_ID"

# A search's trial, told to each of its jobs: the study (name and storage) in the environment
# every job inherits from the launching process, the trial's number in the job's own
# environment (hydra.job.env_set, one per job).
STUDY_ENV = "DENSELAB_OPTUNA_STUDY"
STORAGE_ENV = "DENSELAB_OPTUNA_STORAGE"
TRIAL_ENV = "DENSELAB_OPTUNA_TRIAL"
