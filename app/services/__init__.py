"""The pipeline from market data to served views."""
