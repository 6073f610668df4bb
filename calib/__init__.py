"""Camera calibration.

Intrinsics and depth scale are never hard-coded: sources read them from the device or the
recording (``tracker.sources``) into ``tracker.types.CameraIntrinsics``. This package is
where multi-camera extrinsic calibration and its file format belong.
"""
