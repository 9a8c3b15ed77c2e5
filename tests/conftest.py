"""Fixtures every test gets; what tests import (paths, tiny models, tokenizers) lives in ``helpers.py``."""

from __future__ import annotations

import os
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def stock_peft_dora():
    """Every test starts with PEFT's own DoRA for ``LoraConfig(use_dora=True)``.

    Importing lm-eval's HF model (or ``trl.cli``) turns routing on for the whole process, as the start-up
    hook does for users; without this a test's outcome would depend on which tests ran before it.
    """
    layer = sys.modules.get("dora_plugins.peft_layer")
    if layer is not None:
        layer.route_peft(False)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin-wait (20-30x slower).

    The subprocesses that tests start (the CLIs, lm_eval, torchrun, fresh interpreters) inherit the setting.
    """
    threads = torch.get_num_threads()
    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    torch.set_num_threads(1)
    os.environ.update(ONE_THREAD)
    yield
    torch.set_num_threads(threads)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


ONE_THREAD = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
