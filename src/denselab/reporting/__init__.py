"""What a run reports: one evaluation per split, the numbers behind the figures, the
figures as pure functions, and the callbacks that decide when each is drawn."""
