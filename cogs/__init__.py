"""Discord adapters: slash commands, autocomplete, views and message formatting.

Each extension module (`errors`, `buttons`, `delivery`, `imagine`, `train`, `embeddings`, `jobs`,
`admin`) has a `setup(bot)` that registers what it owns; `bot.discord_bot.EXTENSIONS` lists them
by name. The other modules are helpers the extensions share: `common`, `errors`, `persistent`
(the base of every button that survives a restart), `queueing`, `text`, `cards`, `images`,
`library`.
"""
