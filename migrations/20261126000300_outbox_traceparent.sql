-- migrate:up
-- Tracing (#15): the W3C trace context (`traceparent`) of the transaction that
-- wrote an event, so the relay's publish and every consumer continue the trace of
-- the DeleteUser call that caused it. NULL when that call was not traced (and for
-- rows written before this migration). A nullable column without a default: adding
-- it rewrites nothing, and the previous release, which does not name it, keeps
-- writing rows during a rolling upgrade.
ALTER TABLE outbox ADD COLUMN traceparent text NULL;

-- migrate:down
ALTER TABLE outbox DROP COLUMN traceparent;
