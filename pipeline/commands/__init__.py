"""`grar` subcommands, one module each."""
