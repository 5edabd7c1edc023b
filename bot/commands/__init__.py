"""One module per `lexicon` subcommand: `add_arguments(parser)` and `main(args) -> int`.

These modules are imported to build `--help`, so their top level imports only argparse-level
things; the real work is imported inside `main`.
"""
