"""auth_client: validate user ids against auth-service before inserting rows.

The full client (cache, circuit breaker, coalescing, fallback) is being built;
today this package holds the generated protocol code in `auth_client._proto`.
"""

__all__: list[str] = []
