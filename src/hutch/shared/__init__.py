"""What every hutch role shares: errors, ids, paths, generated protocol code."""
