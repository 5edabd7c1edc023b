-- 0009: three columns of `users` that nothing ever read or wrote are dropped. Limits are set for
-- every member alike (LEXICON_MAX_QUEUED_PER_USER, or a server's /admin limits), and a member's
-- name is Discord's, looked up when shown: a stored copy would only go stale.
ALTER TABLE users DROP COLUMN display_name;
ALTER TABLE users DROP COLUMN max_queued_jobs;
ALTER TABLE users DROP COLUMN max_embeddings;
