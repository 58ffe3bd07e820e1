-- The content service's own database. `author_id` and `user_id` used to be
-- `REFERENCES users(id)` into the auth database; now they are validated with
-- auth_client.require_users before the insert, and cleaned up from
-- `user_deleted` events.
CREATE TABLE IF NOT EXISTS posts (
    id         uuid        PRIMARY KEY,
    author_id  uuid        NOT NULL,  -- was REFERENCES users(id)
    body       text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS posts_author_id_idx ON posts (author_id);

CREATE TABLE IF NOT EXISTS post_mentions (
    post_id uuid NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,  -- was REFERENCES users(id)
    PRIMARY KEY (post_id, user_id)
);

CREATE INDEX IF NOT EXISTS post_mentions_user_id_idx ON post_mentions (user_id);
