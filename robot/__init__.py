"""Robot side of World-VLA-Loop: contracts (Episode, wire, policy artifact), devices, control, safety.

Nothing in this package imports torch, diffusers, transformers or `learning` (the robot PC runs ONNX);
only `robot.sim` needs the simulator (and its torch), imported lazily when a simulated robot is asked for.
"""
