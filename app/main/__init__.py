"""Composition roots: where the service's parts are chosen and wired together from the
settings (today the market source; the app factory and the collector/server roles
follow). Nothing below imports this package."""
