"""RGB-D frames from cameras (RealSense), recordings, replay and extrinsic calibration."""
