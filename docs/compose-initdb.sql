CREATE DATABASE mlflow OWNER ftsweep;
