"""Model-based quality: DCLM-style fastText classifiers trained from reference sources
(:mod:`refinery.classifier.train`), the scorers the ``quality_classifier`` stage runs
(:mod:`refinery.quality.scorers`), what a fastText model learned (:mod:`refinery.quality.features`)
and the corpus-wide percentile cut-off of ``quality_select`` (:mod:`refinery.quality.select`)."""
