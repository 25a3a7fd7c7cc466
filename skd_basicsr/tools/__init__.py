"""Command-line tools of the basicsr command: one module per subcommand, each with main(argv)."""
