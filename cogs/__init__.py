"""Discord adapters: slash commands, autocomplete, views and message formatting."""
