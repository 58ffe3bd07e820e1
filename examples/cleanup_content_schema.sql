-- The content service's own tables (schema "content") after the foreign keys into
-- the auth database were removed. A deleted user's content is soft-deleted
-- (deleted_at) by examples/cleanup_content.py when the `user_deleted` event
-- arrives; readers already filter on `deleted_at IS NULL`.
CREATE SCHEMA IF NOT EXISTS content;

CREATE TABLE IF NOT EXISTS content.posts (
    id         uuid        PRIMARY KEY,
    author_id  uuid        NOT NULL,  -- was REFERENCES users(id)
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL
);
CREATE INDEX IF NOT EXISTS posts_author_live_idx
    ON content.posts (author_id) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS content.bookmarks (
    user_id    uuid        NOT NULL,  -- was REFERENCES users(id)
    post_id    uuid        NOT NULL REFERENCES content.posts (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL,
    PRIMARY KEY (user_id, post_id)
);

CREATE TABLE IF NOT EXISTS content.stories (
    id         uuid        PRIMARY KEY,
    author_id  uuid        NOT NULL,  -- was REFERENCES users(id)
    media_url  text        NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL
);
CREATE INDEX IF NOT EXISTS stories_author_live_idx
    ON content.stories (author_id) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS content.processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
