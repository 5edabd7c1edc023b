"""Discord adapters: slash commands, autocomplete, views and message formatting.

`EXTENSIONS` is the explicit list `setup_hook` loads, one by one, in this order. Delivery comes
first so results of jobs finished while the bot was away go out as soon as it starts.
"""

EXTENSIONS: tuple[str, ...] = (
    "cogs.delivery",
    "cogs.imagine",
    "cogs.train",
    "cogs.embeddings",
    "cogs.jobs",
    "cogs.admin",
)
