"""The registered solvers, one module each, and the Levenberg-Marquardt iteration two of them share."""
