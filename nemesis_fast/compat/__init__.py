"""Drop-in classes for users of the peer libraries: change the import line, keep the rest of the code.

- :mod:`nemesis_fast.compat.torchattacks`: ``FGSM``, ``PGD``, ``RFGSM``, ``CW``, ``DeepFool`` and ``JSMA`` for
  torchattacks 3.5 users, subclasses of torchattacks' own classes, computing torchattacks' algorithms.
- :mod:`nemesis_fast.compat.art`: ``FastGradientMethod``, ``ProjectedGradientDescent``, ``DeepFool``,
  ``SaliencyMapMethod``, ``CarliniL2Method`` and ``GaussianAugmentation`` for ART 1.20 users, subclasses of ART's own
  classes taking a ``PyTorchClassifier``.

Each module imports only where its peer library is installed (``pip install nemesis_fast[peers]``) and raises an
ImportError naming the missing package otherwise. Nothing here is imported by ``import nemesis_fast``.
"""
