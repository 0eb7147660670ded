"""The Branin function (global minimum 0.397887), as a trial script.

Reads its parameters from the environment augur sets, reports the value as a metric
every few "steps" (the series), and the last value is the result.
"""
import math
import os

x1 = float(os.environ["AUGUR_PARAM_X1"])
x2 = float(os.environ["AUGUR_PARAM_X2"])
a, b, c = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi
r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
value = a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s
for step in range(1, 4):
    # A pretend training loop converging to the value.
    print(f"METRICS: step={step},value={value + (3 - step):.6f}", flush=True)
print(f"branin({x1:.3f}, {x2:.3f}) = {value:.6f}")
