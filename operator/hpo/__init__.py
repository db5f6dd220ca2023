"""hpo-operator: two-stage hyperparameter optimisation of Keras MLPs, on a cluster or this machine.

Sub-packages by job, in layers (each imports only those below it): ``cli`` ->
``dashboard`` -> ``kube`` | ``local`` -> ``session`` | ``results`` -> ``records`` ->
``engine`` -> ``data`` -> ``study`` -> ``store``. TensorFlow lives in ``hpo_trainer``.
"""
