import time

import torch

from workbench.experiments.measure import Measure


def test_measure_sees_time_and_a_transient_allocation():
    with Measure("cpu") as m:
        block = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB of float32, touched
        time.sleep(0.05)
        del block
    assert m.seconds >= 0.05
    assert 150 <= m.peak_mib <= 2048


def test_measure_of_nothing_is_near_zero():
    with Measure("cpu") as m:
        pass
    assert m.peak_mib < 50
