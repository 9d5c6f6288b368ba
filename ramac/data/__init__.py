"""Offline data: the container the updaters sample from, and the Stochastic MuJoCo data sets
(Minari format) it loads.

    container.py           OfflineDataset, Batch: arrays on a device, batches, loaders (npz, D4RL HDF5, Minari)
    stochastic_mujoco.py   the six presets' data sets: load, list, info (making them imports ramac.datagen)
"""

from .container import Batch, DatasetError, OfflineDataset

__all__ = ["Batch", "DatasetError", "OfflineDataset"]
