"""``ftsweep models``: placeholder until the local backend lands."""

import typer

app = typer.Typer(help="Models for the local trainer.", no_args_is_help=True)
