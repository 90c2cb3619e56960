"""Block caching: gates decide when to compute, cached residuals are what a skipped block emits."""
from .block_cache import BlockCacheConfig, BlockCachePatch
from .predictors import ForecastConfig
from .presets import LEVELS, preset

__all__ = ["BlockCacheConfig", "BlockCachePatch", "ForecastConfig", "LEVELS", "preset"]
