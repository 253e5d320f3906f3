"""A tiny Falcon trained on refinery's token shards (`refinery train CONFIG`).

- **Data:** the Megatron ``.bin``/``.idx`` files of a token folder, memory-mapped. Training draws
  random windows of ``seq_len + 1`` tokens from the first ``1 - heldout_fraction`` of each
  file. Evaluation uses fixed windows from the last part, which training never sees.
- **Model:** transformers' ``FalconForCausalLM``: multi-query attention, parallel attention and
  MLP, rotary embeddings, no biases. The size comes from the config.
- **Training:** AdamW (weight decay 0.1 on matrices only), linear warmup then cosine decay to
  ``min_lr``, gradient clipping and accumulation, a seed and a token budget.
- **Device:** ``auto`` is CUDA with bf16 where there is a GPU, else CPU in fp32.
- **Evaluation:** bits per byte, ``sum(NLL) / ln 2 / bytes``, where the bytes are those of the
  decoded eval windows. It therefore compares across tokenizers. The standard error over eval
  batches is reported with it.
- **Outputs:** ``OUTPUT/metrics.jsonl``, checkpoints in ``OUTPUT/checkpoint/`` (resume
  continues from the last one), and the final model with ``save_pretrained`` plus
  ``tokenizer.json``, loadable with ``AutoModelForCausalLM.from_pretrained`` offline.
"""

from refinery.train.card import plot_metrics, write_model_card
from refinery.train.data import (TokenWindows, eval_windows, fixed_windows, open_megatron, open_token_folder,
                                 window_bytes)
from refinery.train.loop import build_optimizer, learning_rate, pick_device, train, train_step
from refinery.train.loss import (LOGIT_CHUNK_ELEMENTS, build_model, evaluate, evaluate_sets, linear_cross_entropy,
                                 train_loss, window_loss)
from refinery.train.spec import (EvalSet, ModelSettings, TrainSettings, TrainSpec, eval_plan, parse_train, sets_due,
                                 trajectory)
from refinery.train.task import run_training, training_task

__all__ = [
    "EvalSet", "LOGIT_CHUNK_ELEMENTS", "ModelSettings", "TokenWindows", "TrainSettings", "TrainSpec", "build_model",
    "build_optimizer", "eval_plan", "eval_windows", "evaluate", "evaluate_sets", "fixed_windows", "learning_rate",
    "linear_cross_entropy", "open_megatron", "open_token_folder", "parse_train", "pick_device", "plot_metrics",
    "run_training", "sets_due", "train", "train_loss", "train_step", "training_task", "trajectory", "window_bytes",
    "window_loss", "write_model_card",
]
