"""Exceptions shared by robot-side devices. They subclass builtins so callers can catch broadly."""


class DeviceNotConnectedError(ConnectionError):
    """A device was used before connect() or after disconnect()/unplug."""


class DeviceAlreadyConnectedError(ConnectionError):
    """connect() was called twice."""


class StaleFrameError(TimeoutError):
    """A camera returned no new frame within its allowed age."""
