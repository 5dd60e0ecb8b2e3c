"""Process-level helpers: memory release, libraries imported in the background, the `Log` sink type."""
