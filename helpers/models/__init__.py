"""The local models: the student prepared once as a model folder, loaded on the profile's device, generating greedily."""
