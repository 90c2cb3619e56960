"""Block caching: gates decide when to compute, cached residuals are what a skipped block emits."""
from .block_cache import BlockCacheConfig, BlockCachePatch

__all__ = ["BlockCacheConfig", "BlockCachePatch"]
