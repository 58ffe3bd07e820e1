"""store: the auth database. Owns every SQL statement and the asyncpg pool.

- `pool`: the pool, `Budget` (a database time limit and where it came from) and the
  one translation of asyncpg errors into domain errors (`translate_errors`);
- `users`: the `User` model and `UserRepository` (one state query, one row -> state
  rule), `lookup`: concurrent UserExists lookups merged into shared queries;
- `deletion`: DeleteUser's transaction (soft delete + outbox row);
- `outbox`: the outbox table (written by a deletion, read by the relay);
- `migrations`: applying `migrations/` with dbmate.

May import: `auth_service.config`, `auth_service.errors`, `auth_client.contract`
and `auth_client.toolkit.dbmate`. Never imports `api`, `events`, `cli` or `local`.
"""
