-- The messaging service's own tables (schema "messaging"), as they look after
-- the foreign keys into the auth database were removed. Before, the user columns
-- were `REFERENCES users(id)` with ON DELETE CASCADE / SET NULL; now the cascade is
-- done by examples/cleanup_messaging.py when the `user_deleted` event arrives.
CREATE SCHEMA IF NOT EXISTS messaging;

CREATE TABLE IF NOT EXISTS messaging.conversations (
    id         uuid        PRIMARY KEY,
    title      text        NULL,
    created_by uuid        NULL,  -- was REFERENCES users(id) ON DELETE SET NULL
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
    -- was REFERENCES users(id) ON DELETE SET NULL. NULL = "a deleted user": the
    -- message stays in the conversation, its sender is anonymized.
    sender_id       uuid        NULL,
    body            text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_sender_id_idx
    ON messaging.messages (sender_id) WHERE sender_id IS NOT NULL;

-- Event ids already handled (auth_client.events.ProcessedEvents), written in the
-- same transaction as the cleanup.
CREATE TABLE IF NOT EXISTS messaging.processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
