"""The Feast feature repo: definitions, the two store profiles and the store adapters.

``open_store(settings) -> FeatureStoreHandle`` is the entry point; see ``store.py``.
"""
