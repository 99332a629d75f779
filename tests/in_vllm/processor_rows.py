"""Run by the vLLM virtualenv (tests/test_vllm.py): the plug-in's marked logits on random rows.

Reads a JSON job on stdin (rows of prompt/output ids, cohorts, temperatures, the model's
vocabulary size), feeds the requests to `CohortWatermark` through vLLM's own
`BatchUpdate`, applies it once to random logits and writes the logits before and after
to the .npz named on the command line, for the test to compare with `Watermark.apply`;
then applies it once more to the same step.
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from distillguard.engine.vllm_plugin import CohortWatermark

job = json.load(sys.stdin)
config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: job["vocab"]))
processor = CohortWatermark(config, torch.device("cpu"), False)
added = []
for i, row in enumerate(job["rows"]):
    params = SamplingParams(temperature=row["temperature"], extra_args=row["extra_args"])
    CohortWatermark.validate_params(params)
    added.append((i, params, row["prompt"], list(row["output"])))
processor.update_state(BatchUpdate(batch_size=len(added), removed=[], added=added, moved=[]))
rng = np.random.default_rng(job["seed"])
logits = rng.standard_normal((len(added), job["vocab"])).astype(np.float32)
marked = processor.apply(torch.from_numpy(logits.copy())).numpy()
# The same step again with no token added: what vLLM does while a prompt is still being
# prefilled in chunks (it samples the row and discards the sample).
again = processor.apply(torch.from_numpy(logits.copy())).numpy()
np.savez(sys.argv[1], logits=logits, marked=marked, again=again)
