"""OpenMMLab edge: mmengine training adapter and mmsegmentation registrations."""
