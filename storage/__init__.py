"""Everything Lexicon knows: one SQLite database (aiosqlite) plus content-addressed files."""
