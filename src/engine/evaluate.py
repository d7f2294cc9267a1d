"""The evaluation loop shared by eval.py and eval-while-training."""
from __future__ import annotations

import time

import mindspore as ms
from tqdm import tqdm


def run_evaluation(model_api, cfg, forward, dataset, evaluator, progress: bool = True) -> dict:
    """Run `forward` (the inference network in eval mode, or `frozen_forward` of it) over the
    dataset, post-process with the model's code and score."""
    evaluator.reset()
    total = dataset.get_dataset_size()
    start = time.time()
    iterator = dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
    for batch in tqdm(iterator, total=total, desc="eval", disable=not progress, mininterval=2):
        outputs = forward(ms.Tensor(batch["image"]))
        metas = model_api.metas_from_batch(batch)
        evaluator.update(model_api.postprocess(cfg, [o.asnumpy() for o in outputs], metas), metas)
    print(f"evaluated {len(evaluator.images)} images in {time.time() - start:.1f} s", flush=True)
    return evaluator.compute()
