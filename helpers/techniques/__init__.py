"""Further chapters, each a technique of its own: questions from a domain tag tree (07),
soft labels and GKD (08), fast thinking by long-to-short rewriting (09)."""
