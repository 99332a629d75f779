"""Keyed, statistically testable watermarks that students learn (KGW and Gumbel-max)."""

from distillguard.watermark.core import DetectionResult, Watermark, WatermarkConfig
from distillguard.watermark.keys import WatermarkKey

__all__ = ["DetectionResult", "Watermark", "WatermarkConfig", "WatermarkKey"]
