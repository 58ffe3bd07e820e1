-- The messaging service's own tables (schema "messaging"), as they look after
-- the foreign keys into the auth database were removed. Before, the user columns
-- were `REFERENCES users(id)`; now examples/cleanup_messaging.py does the cleanup
-- when the `user_deleted` event arrives. The author columns are NOT NULL, as in
-- real schemas: a deleted user's messages and conversations are anonymised to the
-- tombstone user 00000000-0000-0000-0000-000000000000 (the nil UUID, which
-- auth-service never issues), never set to NULL.
CREATE SCHEMA IF NOT EXISTS messaging;

CREATE TABLE IF NOT EXISTS messaging.conversations (
    id         uuid        PRIMARY KEY,
    title      text        NULL,
    created_by uuid        NOT NULL,  -- was REFERENCES users(id); tombstone once deleted
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS messaging.conversation_members (
    conversation_id uuid        NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,  -- was REFERENCES users(id) ON DELETE CASCADE
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS conversation_members_user_id_idx
    ON messaging.conversation_members (user_id);

CREATE TABLE IF NOT EXISTS messaging.messages (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    -- was REFERENCES users(id). The tombstone user = "a deleted user": the message
    -- stays in the conversation, its sender is anonymised.
    sender_id       uuid        NOT NULL,
    body            text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_sender_id_idx ON messaging.messages (sender_id);
CREATE INDEX IF NOT EXISTS conversations_created_by_idx ON messaging.conversations (created_by);

-- Event ids already handled (auth_client.events.ProcessedEvents), written in the
-- same transaction as the cleanup.
CREATE TABLE IF NOT EXISTS messaging.processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
