"""envd's process domain: spawning as a user, output fan-out, stdin, signals, PTYs."""
