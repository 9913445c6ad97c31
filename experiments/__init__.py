"""Experiment machinery: run configurations, the training and evaluation
loop, checkpoints and exports, sweeps, comparison tables and plots. The
libraries behind the binaries (`lerl_recsim.binaries`), one per binary and
under the same name."""
