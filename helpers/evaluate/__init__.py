"""Evaluation: the same items for every model, evalscope runs, one scorer, quick local checks, and the ROI."""
