"""The shapes bench: every stateful method at the shapes users run (`python -m dit_accel.bench.shapes`)."""
