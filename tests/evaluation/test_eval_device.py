"""evaluate.py's networks compute on its `device` (conf/evaluate.yaml): every judge, the held-out
ones, MTCNN and the attribute networks. The meta device stands in for an accelerator: the first
network call of each part records where its inputs and weights are, then stops the part (meta
tensors hold no numbers to go on with). A part that left anything on the CPU would show it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from evaluation.run_eval import attribute_metrics, geometry_and_detection, heldout_metrics, judge_metrics
from falco.backbones.age_gender import load_age_gender
from falco.backbones.dlib_resnet import load_dlib_recognizer

META = torch.device("meta")


class Computed(Exception):
    pass


def first_call_devices(part) -> set[torch.device]:
    """Devices of the inputs and weights of the first module call `part()` makes."""
    seen: list[set[torch.device]] = []

    def hook(module, args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        seen.append({t.device for t in [*tensors, *module.parameters(recurse=False), *module.buffers(recurse=False)]})
        raise Computed

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        with pytest.raises(Computed):
            part()
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    lm = torch.tensor([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]]).expand(4, 5, 2)
    return SimpleNamespace(originals=torch.rand(4, 3, 64, 64, generator=g) * 2 - 1,
                           anonymized=torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, landmarks=lm.clone(),
                           identities=list(range(4)), has_identities=False, loss_judge="dlib_resnet", ids=list("abcd"),
                           labels=[{}] * 4)


def test_every_part_of_the_evaluation_computes_on_its_device(data):
    heldout = OmegaConf.create({"heldout": {"enabled": True, "recognizers": ["sface"], "detector": True,
                                            "attributes": []}, "far": [0.01]})
    parts = {"judge": lambda: judge_metrics("dlib_resnet", load_dlib_recognizer(), data, (0.01,), META),
             "attributes": lambda: attribute_metrics(load_age_gender(), data, True, META),
             "detection": lambda: geometry_and_detection(data, 0.9, META),
             "held-out": lambda: heldout_metrics(heldout, data, META)}
    assert {name: first_call_devices(part) for name, part in parts.items()} == {name: {META} for name in parts}
