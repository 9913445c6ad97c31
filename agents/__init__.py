"""The algorithms: agents, their networks and policies, and the learners
that collect and train them. Nothing here runs an experiment; the run loop
(`lerl_recsim.experiments`) builds a learner from a family's module and
drives it."""
