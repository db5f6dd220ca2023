"""The study on a cluster: kopf handlers, API calls, trainer pods, the CRD, status and metrics.

The only package that imports kopf and kubernetes; importing it alone loads neither
(``hpo.kube.crd`` is read by the CLI without a cluster).
"""
