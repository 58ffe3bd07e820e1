-- The messaging service's own database. Tables that used to hold
-- `REFERENCES users(id)` into the auth database keep a plain uuid column:
-- the id is validated with auth_client.require_user before the insert, and the
-- rows of deleted users are cleaned up from `user_deleted` events.
CREATE TABLE IF NOT EXISTS chat_groups (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS group_members (
    group_id bigint      NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    user_id  uuid        NOT NULL,  -- was REFERENCES users(id); validated by auth-service
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);

-- Finding a user's memberships when their user_deleted event arrives.
CREATE INDEX IF NOT EXISTS group_members_user_id_idx ON group_members (user_id);

CREATE TABLE IF NOT EXISTS group_messages (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   bigint      NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    sender_id  uuid        NULL,  -- NULL: a system message
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
