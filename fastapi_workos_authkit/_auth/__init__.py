"""Auth: access-token verification (JWKS), the current_user dependencies, providers."""
