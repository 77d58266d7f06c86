"""What a command runs that is more than one engine call: run with MLflow wired in (sweep), retune,
schedule, learning_curve, diagnose."""
