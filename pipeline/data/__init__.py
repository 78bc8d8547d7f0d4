"""Files: VOC-format datasets (preparation of VOC/SBD, synthetic generator, dataset index,
datasets), the files the stages exchange (:mod:`pipeline.data.files`), the submission format and
atomic writes (:mod:`pipeline.data.io_utils`)."""
