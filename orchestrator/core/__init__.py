"""The bottom layer: the one exception tree (errors), the hyper-parameter registry (params), the
names stored on studies and trials (attrs), progress records (progress)."""
