-- 0010: what workers last reported about each configured model, under the source the bot had
-- configured for it then. A worker reports a model once it is loaded and warmed up, minutes
-- after a cold start; the bot reads these rows at start, so an import, autocomplete and a
-- family refusal know the model's family before that. A row whose source is no longer the
-- model's is not used, and the next report replaces it.
CREATE TABLE model_reports (
    name TEXT PRIMARY KEY,  -- the configured model's name (LEXICON_MODELS)
    source TEXT NOT NULL,
    family TEXT NOT NULL CHECK (family IN ('sd1', 'sd2', 'sdxl', 'tiny', 'tiny-sdxl')),
    width INTEGER NOT NULL CHECK (width > 0),  -- of an embedding vector of its text encoder(s)
    model_hash TEXT NOT NULL,
    reported_at REAL NOT NULL
) STRICT;
