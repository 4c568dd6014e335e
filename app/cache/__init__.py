"""The tiered view cache: in-process L1, Memcached L2, Redis backup, read-through."""
