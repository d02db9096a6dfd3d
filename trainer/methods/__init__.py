"""One module per training method, each with its own loop, readable top to bottom."""
