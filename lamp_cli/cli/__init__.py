"""The `lamp` command: Typer app, one module per command group, parsing and rendering only."""
