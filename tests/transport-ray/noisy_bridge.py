"""noisy_bridge.py: kodo's bridge beside a Ray that prints to the driver's stdout, as Ray's
raylet warnings reach a driver once many worker processes start ("... PYTHON worker processes
have been started ..."). Runs the bridge at KODO_RAY_REAL_BRIDGE with ray.init wrapped to write
a line to fd 1 right after it connects, where the bridge's frames to the plugin go."""

import os
import runpy
import sys

import ray

real_init = ray.init


def noisy_init(*args, **kwargs):
    connected = real_init(*args, **kwargs)
    os.write(1, b"(raylet) WARNING: a line Ray printed to the driver's stdout\n")
    return connected


ray.init = noisy_init
sys.argv[0] = os.environ["KODO_RAY_REAL_BRIDGE"]
runpy.run_path(sys.argv[0], run_name="__main__")
