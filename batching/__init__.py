"""Gateway-side micro-batching, sans-IO: merge requests into one, cut the answer back, decide when."""

from batching.merge import MergeError, Tensor, merge, merge_key, rows, split
from batching.queue import BatchQueue, Pending

__all__ = ["BatchQueue", "MergeError", "Pending", "Tensor", "merge", "merge_key", "rows", "split"]
