"""VOC-format datasets: preparation of VOC/SBD, synthetic generator, dataset index."""
