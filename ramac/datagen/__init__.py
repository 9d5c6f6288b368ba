"""Making data sets: SAC behaviour policies and the shipped policy assets. Used only by
`ramac data make` and `ramac behaviour`; the training path never imports it."""
