"""Real, typed in-memory implementations of hutch's seams, for tests."""
