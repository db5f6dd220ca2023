"""The trainer: trains one Keras MLP configuration per seed and uploads its artifacts.

Importing this package is cheap: TensorFlow is imported lazily by
``hpo_trainer.model`` when a training starts, so the operator can use
``hpo_trainer.data.validate_dataset`` without it.
"""
