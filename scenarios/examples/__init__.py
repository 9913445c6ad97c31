"""RecSim NG recommenders trained inside the scenario's story."""
