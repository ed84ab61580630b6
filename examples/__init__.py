"""Worked examples of fpf: small trained networks with known fixed-point structure."""
