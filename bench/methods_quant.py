"""Bench methods of one capability (quant): each calls `register_method` from `bench/methods.py`."""
