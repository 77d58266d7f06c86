-- Run once by the postgres image on an empty volume (as POSTGRES_USER, which owns it):
-- POSTGRES_DB is the Optuna database; MLflow's tracking server gets its own.
CREATE DATABASE mlflow;
