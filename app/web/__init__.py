"""HTTP layer: the Quart app, its routes and error handling."""
