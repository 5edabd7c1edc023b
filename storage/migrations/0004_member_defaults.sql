-- Personal defaults (`/settings`): what a member's `/imagine` and `/train` use for an option
-- they leave out. NULL means "no preference": the operator's default applies.
CREATE TABLE member_defaults (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    size TEXT,  -- "WIDTHxHEIGHT"; ignored while the operator no longer offers it
    steps INTEGER CHECK (steps IS NULL OR steps >= 1),
    sampler TEXT,
    guidance REAL CHECK (guidance IS NULL OR guidance >= 0),
    count INTEGER CHECK (count IS NULL OR count >= 1),
    negative TEXT,
    share INTEGER CHECK (share IS NULL OR share IN (0, 1)),  -- new embeddings shared
    updated_at REAL NOT NULL
) STRICT;
