-- migrate:up
-- The canonical users table. Other services no longer reference it with
-- foreign keys; they ask auth-service (UserExists / BatchUserExists).
CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    username     text        NOT NULL,
    display_name text        NOT NULL,
    email        text        NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: a deleted user keeps its row (and id) forever, so "deleted"
    -- can be told apart from "never existed".
    deleted_at   timestamptz NULL,
    CONSTRAINT users_username_length CHECK (char_length(username) BETWEEN 1 AND 64),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 128),
    CONSTRAINT users_deleted_after_created CHECK (deleted_at IS NULL OR deleted_at >= created_at)
);

-- One active user per username, compared case-insensitively. A deleted user's
-- username can be taken again.
CREATE UNIQUE INDEX users_active_username_key
    ON users (lower(username))
    WHERE deleted_at IS NULL;

-- UserExists / GetUser / BatchUserExists / DeleteUser are primary-key lookups
-- (users_pkey). This index serves admin listings of recently deleted users.
CREATE INDEX users_deleted_at_idx ON users (deleted_at) WHERE deleted_at IS NOT NULL;

-- migrate:down
DROP TABLE users;
