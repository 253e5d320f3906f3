"""refinery: RefinedWeb-style Macrodata Refinement on a Dask DAG."""

__version__ = "0.1.0"
