"""The GPU worker process: the engine-agnostic loop (`loop`), the bot's embedded child (`local`)
and the standalone Redis worker (`redis`).

Only worker processes import this package. The bot configures workers through the torch-free
contract modules outside it (`engine.protocol`, `engine.worker_config`, `engine.redis_wire`)
and starts the embedded child by module name, so the bot process never loads worker code.
"""
