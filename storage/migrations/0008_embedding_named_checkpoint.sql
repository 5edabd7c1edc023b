-- 0008: the checkpoint an imported file says it was trained on (A1111's `sd_checkpoint_name`,
-- kohya's `ss_sd_model_name`), kept as the file's unverified claim for lists and cards. NULL when
-- the file names none, and for embeddings trained here (their training job's `model` says it).
ALTER TABLE embeddings ADD COLUMN named_checkpoint TEXT
    CHECK (named_checkpoint IS NULL OR length(named_checkpoint) BETWEEN 1 AND 100);
