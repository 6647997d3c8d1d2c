"""Calibration errors. They subclass ValueError so the CLI prints them as one line; each says the fix."""


class CalibrationError(ValueError):
    """Calibration input cannot give a trustworthy result; the message says why and what to do."""


class BoardNotFoundError(CalibrationError):
    """No ChArUco board (or too little of it) was found in the image(s)."""


class TooFewViewsError(CalibrationError):
    """Not enough accepted views / pose pairs to solve."""


class DegenerateMotionError(CalibrationError):
    """The robot motions between samples cannot determine the hand-eye transform (e.g. pure translation)."""


class UnitsError(CalibrationError):
    """Lengths look like millimetres where metres are expected (or the reverse)."""
