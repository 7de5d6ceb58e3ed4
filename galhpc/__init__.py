"""galhpc: HPC batch toolkit for unsupervised galaxy morphology and synthetic galaxy images.

Importing galhpc never imports mpi4py, horovod or the compiled extension: those are
optional and loaded where used.
"""

__version__ = "0.1.0"
