-- migrate:up
-- Transactional outbox: DeleteUser inserts the event here in the same transaction
-- as the soft delete, so a committed deletion always has its event and a
-- rolled-back one never does. The relay publishes rows to Kafka and then sets
-- published_at; published rows are pruned after a retention period.
CREATE TABLE outbox (
    -- Claim order. Only used for ordering among unpublished rows, never as a
    -- "last seen" cursor (sequence values commit out of order).
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Unique per event; sent as the `event-id` header, consumers dedupe on it.
    event_id      uuid        NOT NULL UNIQUE,
    -- e.g. 'auth.v1.UserDeleted'; the relay maps it to a topic.
    event_type    text        NOT NULL,
    -- The Kafka message key (the user id as text): one partition per key, and
    -- the relay publishes one key's events strictly in id order.
    partition_key text        NOT NULL,
    -- The serialized protobuf message.
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz NULL,
    -- Failed publish attempts and the last error, for operators.
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text        NULL
);

-- The relay's claim: unpublished rows in id order ...
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
-- ... skipping a row while an earlier row of the same key is unpublished.
CREATE INDEX outbox_unpublished_key_idx ON outbox (partition_key, id) WHERE published_at IS NULL;
-- Pruning of published rows after the retention period.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- migrate:down
DROP TABLE outbox;
