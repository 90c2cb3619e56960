"""Bench methods of one capability (guidance): each calls `register_method` from `bench/methods.py`."""
