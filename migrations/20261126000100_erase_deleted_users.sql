-- migrate:up
-- Deleted means erased: a deleted user keeps its row (id, created_at, deleted_at;
-- it is how DELETED is told from NOT_FOUND) but not its personal data. Erasure
-- replaces username and display_name with the tombstone 'deleted:<id>' (a ':' no
-- real username may contain, so it never collides with one) and clears email.
-- erased_at records when: at once in DeleteUser's transaction (PII_RETENTION_S=0,
-- the default) or by serve's erasure job once the retention period is over.
-- Rows deleted before this release are erased by that job or by
-- `auth-service erase-deleted`.
ALTER TABLE users ADD COLUMN erased_at timestamptz NULL;
ALTER TABLE users ADD CONSTRAINT users_erased_after_deleted
    CHECK (erased_at IS NULL OR (deleted_at IS NOT NULL AND erased_at >= deleted_at));

-- The erasure job's work list: deleted rows whose personal data is still there.
CREATE INDEX users_erasure_pending_idx ON users (deleted_at)
    WHERE deleted_at IS NOT NULL AND erased_at IS NULL;

-- migrate:down
DROP INDEX users_erasure_pending_idx;
ALTER TABLE users DROP CONSTRAINT users_erased_after_deleted;
ALTER TABLE users DROP COLUMN erased_at;
