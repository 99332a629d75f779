"""Model backends. The bundled model needs the `model` extra; import lazily."""
