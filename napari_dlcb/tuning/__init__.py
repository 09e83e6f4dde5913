"""Hyper-parameter studies over any task (optuna), locally or on a dask cluster.

See :func:`napari_dlcb.tuning.study.tune`. Importing this package is cheap.
"""
