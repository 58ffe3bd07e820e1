"""auth-service: the canonical users table behind a gRPC API."""

__version__ = "0.1.0"
