"""The explain stage: LRP for every sample, distributed with dask, written to the heatmap store."""
from .plan import ShardTask, make_plan
from .run import ClusterSpec, ExplainResult, Prepared, prepare, run_explain
from .task import ExplainSpec, explain_shard, resolve_composite

__all__ = ["ClusterSpec", "ExplainResult", "ExplainSpec", "Prepared", "ShardTask", "explain_shard", "make_plan",
           "prepare", "resolve_composite", "run_explain"]
