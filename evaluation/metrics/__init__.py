"""Metrics of the evaluation suite, one concept per module.

consistency  same person vs different people among anonymized images
attributes   multi-attribute agreement, accuracy and balanced accuracy (the 40-attribute classifier)
geometry     5-point landmark error normalized by the inter-ocular distance (NME)
quality      FID and KID with a local Inception file or an injected feature extractor

The measures a run's own summary also reports live in the library: re-identification
(falco/reid.py), gender and age agreement (falco/agreement.py), the detector and its detection
rate (falco/detect.py), the held-out judges (falco/heldout.py).
"""
