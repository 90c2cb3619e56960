"""Bench methods of one capability (sparse): each calls `register_method` from `bench/methods.py`."""
