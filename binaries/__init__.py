"""The absl binaries: thin mains that parse flags and call the experiment
library of the same name (`lerl_recsim.experiments`)."""
