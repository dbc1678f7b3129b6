"""One module per ``tracehound`` subcommand: argument handling and I/O only."""
