"""The trainer: trains one Keras MLP configuration per seed and uploads its artifacts.

TensorFlow lives only in this package, and only ``hpo_trainer.model`` imports
it (lazily, when a training starts). The package depends on ``hpo`` (the
contract, the layout, the store and dataset reading), never the reverse: the
operator image does not ship it.
"""
