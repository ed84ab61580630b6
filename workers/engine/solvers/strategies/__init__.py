"""Search strategies around a solver: Anderson warm starts, midpoint restarts, Adam's adaptive step controls."""
