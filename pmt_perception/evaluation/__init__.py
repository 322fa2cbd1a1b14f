"""Evaluation internals behind `pmt-evaluate`: metric accumulation over (sample, prediction)
pairs, the JSON report, and figures."""
