"""Fixtures of the reliability tests (defined in reliability_utils.py)."""
from reliability_utils import tiny_config, tiny_data_root  # noqa: F401
