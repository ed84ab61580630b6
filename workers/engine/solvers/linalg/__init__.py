"""Batched linear algebra the solvers build on: GMRES and CGLS, and Jacobian products recorded once per point."""
