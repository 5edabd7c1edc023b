-- 0002: the sha256 of the file a member imported, before Lexicon rewrote it in its own format.
-- A1111 and Civitai know an embedding by that hash; images name it in their `TI hashes`.
-- NULL for trained embeddings, whose stored file is the original.
ALTER TABLE embeddings ADD COLUMN source_sha256 TEXT
    CHECK (source_sha256 IS NULL OR length(source_sha256) = 64);
