"""Datasets, transforms, batching and the LightningDataModule for semantic segmentation.

Nothing is imported here, so `import fcn_lightning.data.<module>` stays cheap.
"""
