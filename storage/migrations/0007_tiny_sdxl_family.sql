-- 0007: embeddings of the tiny SDXL test model (family 'tiny-sdxl') can be stored. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt with the same rows and indexes
-- (no other table refers to it).

CREATE TABLE embeddings_new (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 2 AND 32),
    name_folded TEXT NOT NULL
        CHECK (name_folded = lower(name) AND name_folded NOT GLOB '*[^a-z0-9_-]*'),
    kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
    visibility TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'shared')),
    n_vectors INTEGER NOT NULL CHECK (n_vectors BETWEEN 1 AND 75),
    width INTEGER NOT NULL CHECK (width > 0),
    family TEXT NOT NULL CHECK (family IN ('sd1', 'sd2', 'sdxl', 'tiny', 'tiny-sdxl')),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    source TEXT NOT NULL CHECK (source IN ('trained', 'imported')),
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    use_count INTEGER NOT NULL DEFAULT 0 CHECK (use_count >= 0),
    usable INTEGER NOT NULL DEFAULT 1 CHECK (usable IN (0, 1)),  -- 0: its file is missing
    job_id INTEGER REFERENCES jobs (id),  -- the training job that produced it
    source_sha256 TEXT CHECK (source_sha256 IS NULL OR length(source_sha256) = 64),
    shared_guild_id INTEGER CHECK (shared_guild_id IS NULL OR visibility = 'shared'),
    thumbnail_job_id INTEGER REFERENCES jobs (id)
) STRICT;

INSERT INTO embeddings_new (
    id, owner_id, name, name_folded, kind, visibility, n_vectors, width, family, sha256, source,
    description, created_at, use_count, usable, job_id, source_sha256, shared_guild_id,
    thumbnail_job_id
)
SELECT
    id, owner_id, name, name_folded, kind, visibility, n_vectors, width, family, sha256, source,
    description, created_at, use_count, usable, job_id, source_sha256, shared_guild_id,
    thumbnail_job_id
FROM embeddings;

DROP TABLE embeddings;
ALTER TABLE embeddings_new RENAME TO embeddings;

CREATE UNIQUE INDEX embeddings_owner_name ON embeddings (owner_id, name_folded);
CREATE UNIQUE INDEX embeddings_job ON embeddings (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX embeddings_sha ON embeddings (sha256);
CREATE UNIQUE INDEX embeddings_shared_name ON embeddings (ifnull(shared_guild_id, 0), name_folded)
    WHERE visibility = 'shared';
