"""What answers an admitted request: the `Backend` protocol (`base`) and its implementations.

`upstream` forwards to an OpenAI-compatible API; `bundled` serves the bundled model,
watermarked per cohort. `gateway.server.build` is the one place that chooses. This
package imports none of them, so a gateway in front of an upstream never loads torch.
"""
