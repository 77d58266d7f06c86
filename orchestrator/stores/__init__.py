"""The sweep's stores: where they are and whether they answer, opening the Optuna study (study),
the ledger's writes (ledger), the locks every worker shares (locks), and reading a store without
writing (snapshot, read)."""
