"""One module per run_bench.py subcommand (see harness/cli.py for the table)."""
