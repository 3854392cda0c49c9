"""The built-in agents of graphrun. Each uses only the public API of graphrun."""
