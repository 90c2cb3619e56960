"""Bench methods of one capability (forecast): each calls `register_method` from `bench/methods.py`."""
