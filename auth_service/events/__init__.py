"""events: publishing the outbox to Kafka.

- `relay`: claims committed outbox rows (through `store.outbox`), publishes them and
  marks them published; runs inside `serve` or as `auth-service relay`;
- `publisher`: the aiokafka producer (acks=all) and its per-record results;
- `topics`: whether the relay's topics are in place (the relay creates none).

May import: `auth_service.store`, `auth_service.config`, the shared leaves
(`signals`, `notices`, `errors`, `lifecycle`, `tracing`), `auth_client.contract` and
`auth_client.backoff`. Never imports `api`, `cli` or `local`.
"""
