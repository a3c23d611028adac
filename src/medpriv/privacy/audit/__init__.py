"""Empirical privacy audits with canaries: the statistics (`one_run`) and the canaries."""
