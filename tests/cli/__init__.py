"""CLI tests (a package, so their file names may repeat those of the library tests)."""
