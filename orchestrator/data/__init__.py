"""Training data: formats, streaming reader, checks, preparation, token counts."""
