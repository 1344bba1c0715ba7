"""Course tooling, apart from what a learner calls: the headless course runner, the environment
report of notebook 00, the Chinese editions, and the command line (``python -m helpers``)."""
