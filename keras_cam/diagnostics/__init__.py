"""Numbers about maps: metrics, tracking across events, alarms, sanity checks."""
