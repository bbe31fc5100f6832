"""ESPnet plugins and recipes for Oracle Teacher knowledge distillation of CTC models."""

__version__ = "0.1.0"
