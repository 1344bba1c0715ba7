"""Merging: the adapter into the base model, the proof that nothing changed, and the side-by-side chat."""
