"""Forecasting: predict the features of skipped steps (TaylorSeer, CG-Taylor, Spectrum) on the caching engine."""
