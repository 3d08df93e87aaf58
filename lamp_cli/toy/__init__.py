"""The toy world and the toy base (see docs/toy.md)."""
