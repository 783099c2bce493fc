"""Downstream transfer: BiT-HyperRule and the fine-tuning loop."""
