-- 0006: several checkpoints in one deployment (LEXICON_MODELS). A job names the configured
-- model it runs on, so the scheduler hands it only to a worker that holds that model; NULL (the
-- rows queued before models had names) means the deployment's default model. A server's
-- managers pick the model a bare `/imagine` or `/train` uses there; NULL: the deployment's.
ALTER TABLE jobs ADD COLUMN model TEXT;
ALTER TABLE guild_settings ADD COLUMN default_model TEXT;
