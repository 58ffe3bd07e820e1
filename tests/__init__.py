"""The server's test suite.

gRPC core's fork handlers are switched off before grpc is imported: fault tests
start PostgreSQL again (`subprocess.Popen` with `user=`, so a real fork) from this
process while its gRPC server has calls in flight, and with fork support on, the
forked child died with SIGSEGV before it could exec postgres (measured here in
every run of tests/test_database_restart.py). No test relies on a channel or
server surviving a fork.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
