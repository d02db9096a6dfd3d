"""The web dashboard: page shells served by the API; their scripts read only the public /v1 API."""
