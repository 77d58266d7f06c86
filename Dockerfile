# The ftsweep worker image of compose.yaml: the CLI with the PostgreSQL driver.
# EXTRAS=postgres,local adds the local PyTorch trainer (large); sweeps and data are mounted.
FROM python:3.11-slim
ARG EXTRAS=postgres
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY orchestrator ./orchestrator
RUN pip install --no-cache-dir -c constraints.txt ".[${EXTRAS}]" && useradd --create-home ftsweep \
    && mkdir -p /var/lib/ftsweep && chown ftsweep /var/lib/ftsweep
USER ftsweep
ENV FTSWEEP_RUNS_DIR=/var/lib/ftsweep MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true
CMD ["ftsweep", "--help"]
