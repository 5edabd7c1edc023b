"""`python -m bot` is the same as the `lexicon` command."""

from bot.cli import main

raise SystemExit(main())
