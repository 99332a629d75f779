"""The OpenAI-compatible gateway: auth, limits and policy, proxying or the bundled engine, events."""
