"""Reusable ingredients: environment, resources, secrets, registry. No flows here."""
