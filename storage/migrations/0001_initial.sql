-- 0001: the first schema.
-- Conventions: STRICT tables; timestamps are REAL unix seconds (UTC); booleans are 0/1 with a
-- CHECK; enums are TEXT with a CHECK; JSON columns are TEXT that must be valid JSON; sha256
-- columns name files in the content-addressed store.

CREATE TABLE users (
    id INTEGER PRIMARY KEY CHECK (id >= 0),  -- the Discord user id (0: the operator's CLI)
    display_name TEXT NOT NULL DEFAULT '',
    max_queued_jobs INTEGER CHECK (max_queued_jobs IS NULL OR max_queued_jobs >= 0),
    max_embeddings INTEGER CHECK (max_embeddings IS NULL OR max_embeddings >= 0),
    banned INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    guild_id INTEGER,  -- NULL for direct messages and the CLI
    kind TEXT NOT NULL CHECK (kind IN ('generate', 'train')),
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params TEXT NOT NULL CHECK (json_valid(params)),
    batch_key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    lease_owner TEXT,
    lease_expires_at REAL,
    progress TEXT CHECK (progress IS NULL OR json_valid(progress)),
    preview_sha256 TEXT CHECK (preview_sha256 IS NULL OR length(preview_sha256) = 64),
    checkpoint_sha256 TEXT CHECK (checkpoint_sha256 IS NULL OR length(checkpoint_sha256) = 64),
    error TEXT,
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    channel_id INTEGER,
    message_id INTEGER,
    interaction_token TEXT,
    token_expires_at REAL,
    delivered INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    -- A running job, and only a running job, is leased to a worker.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (preview_sha256 IS NULL OR progress IS NOT NULL)
) STRICT;

CREATE INDEX jobs_queued_by_user ON jobs (user_id, id) WHERE state = 'queued';
CREATE INDEX jobs_started_by_user ON jobs (user_id, started_at);
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_undelivered ON jobs (id)
    WHERE delivered = 0 AND state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_preview ON jobs (preview_sha256) WHERE preview_sha256 IS NOT NULL;
CREATE INDEX jobs_checkpoint ON jobs (checkpoint_sha256) WHERE checkpoint_sha256 IS NOT NULL;

-- Training photos a train job needs; kept by hash so a retried job finds them again.
CREATE TABLE job_photos (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    PRIMARY KEY (job_id, idx)
) STRICT;

CREATE INDEX job_photos_sha ON job_photos (sha256);

CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 2 AND 32),
    name_folded TEXT NOT NULL
        CHECK (name_folded = lower(name) AND name_folded NOT GLOB '*[^a-z0-9_-]*'),
    kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
    visibility TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'shared')),
    n_vectors INTEGER NOT NULL CHECK (n_vectors BETWEEN 1 AND 75),
    width INTEGER NOT NULL CHECK (width > 0),
    family TEXT NOT NULL CHECK (family IN ('sd1', 'sd2', 'sdxl', 'tiny')),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    source TEXT NOT NULL CHECK (source IN ('trained', 'imported')),
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    use_count INTEGER NOT NULL DEFAULT 0 CHECK (use_count >= 0),
    usable INTEGER NOT NULL DEFAULT 1 CHECK (usable IN (0, 1)),  -- 0: its file is missing
    job_id INTEGER REFERENCES jobs (id)  -- the training job that produced it
) STRICT;

CREATE UNIQUE INDEX embeddings_owner_name ON embeddings (owner_id, name_folded);
CREATE UNIQUE INDEX embeddings_shared_name ON embeddings (name_folded)
    WHERE visibility = 'shared';
CREATE UNIQUE INDEX embeddings_job ON embeddings (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX embeddings_sha ON embeddings (sha256);

CREATE TABLE images (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    seed INTEGER NOT NULL,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
) STRICT;

CREATE INDEX images_sha ON images (sha256);

CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    limits TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(limits)),
    blocked_words TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(blocked_words)),
    allowed_channel_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allowed_channel_ids)),
    default_negative_prompt TEXT NOT NULL DEFAULT '',
    safety_mode TEXT NOT NULL DEFAULT 'standard'
        CHECK (safety_mode IN ('off', 'standard', 'strict')),
    updated_at REAL NOT NULL
) STRICT;
