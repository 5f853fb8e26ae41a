"""fp32 matmuls on TF32 tensor cores wherever training runs on CUDA, and nowhere else."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from gen_assets.training.fit import TensorCores, use_tensor_cores


@pytest.fixture
def precision():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def test_a_cuda_trainer_turns_on_tf32_matmuls_and_a_cpu_trainer_does_not(precision):
    use_tensor_cores(SimpleNamespace(accelerator=CPUAccelerator()))
    TensorCores().setup(SimpleNamespace(accelerator=CPUAccelerator()), None, "fit")
    assert torch.get_float32_matmul_precision() == "highest"
    # the callback is what a ddp_spawn rank runs: the setting does not travel to new processes
    TensorCores().setup(SimpleNamespace(accelerator=CUDAAccelerator()), None, "fit")
    assert torch.get_float32_matmul_precision() == "high"
