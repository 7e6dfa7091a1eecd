"""XPGAN: CT archives to DRRs, and joint GAN-classifier training for chest X-rays."""

__version__ = "0.1.0"
