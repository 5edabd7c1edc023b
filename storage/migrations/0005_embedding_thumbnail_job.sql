-- 0005: the job that rendered an imported embedding's thumbnail for `/library` and its card.
-- A trained embedding shows its training's previews (`job_id`); an import has no training, so
-- one small render is queued as the importer when it is imported. NULL when none was queued.
ALTER TABLE embeddings ADD COLUMN thumbnail_job_id INTEGER REFERENCES jobs (id);
