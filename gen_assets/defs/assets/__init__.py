"""Assets, one module per stage. Thin: take inputs, call pure code, record metadata."""
