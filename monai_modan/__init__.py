"""monai-modan: metadata (modality + anatomy) supervised contrastive pretraining for medical imaging, on MONAI."""

__version__ = "0.1.0"
