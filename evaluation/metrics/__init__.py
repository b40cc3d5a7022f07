"""Metrics, one concept per module.

reid         closed-set identification (top-k) and verification (TAR at a fixed FAR)
consistency  same person vs different people among anonymized images
detection    share of images in which a detector finds a face; MTCNN adapter
attributes   attribute agreement, accuracy, balanced accuracy, age and gender
geometry     5-point landmark error normalized by the inter-ocular distance (NME)
quality      FID and KID with a local Inception file or an injected feature extractor
"""
