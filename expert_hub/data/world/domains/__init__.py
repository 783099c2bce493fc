"""The six visual domains of the world, and the structured tasks, one module each."""
