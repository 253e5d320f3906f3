"""`refinery classifier train`: a quality classifier from reference sources and a pipeline run."""
