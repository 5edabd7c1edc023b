-- 0002: moderation and the shared library are scoped to a server.
-- A shared embedding belongs to the library of the server it was shared in; NULL is the
-- operator's library (shared from the CLI), which every server sees. Shared names are unique per
-- library. Shared rows from before whose server is unknown (imported, or trained in a direct
-- message) become private again: their owners can share them in a server.

ALTER TABLE embeddings ADD COLUMN shared_guild_id INTEGER
    CHECK (shared_guild_id IS NULL OR visibility = 'shared');

UPDATE embeddings SET shared_guild_id = (SELECT guild_id FROM jobs WHERE jobs.id = embeddings.job_id)
WHERE visibility = 'shared';

UPDATE embeddings SET visibility = 'private'
WHERE visibility = 'shared' AND shared_guild_id IS NULL;

DROP INDEX embeddings_shared_name;
CREATE UNIQUE INDEX embeddings_shared_name ON embeddings (ifnull(shared_guild_id, 0), name_folded)
    WHERE visibility = 'shared';

-- A ban on one server, set by its managers; `users.banned` is the operator's ban, everywhere.
CREATE TABLE guild_bans (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    banned_by INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) STRICT;
