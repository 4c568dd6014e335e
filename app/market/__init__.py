"""Market data sources and the analytics derived from them."""
