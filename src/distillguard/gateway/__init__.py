"""The OpenAI-compatible gateway: auth, limits and policy, the answer, one event per request."""
