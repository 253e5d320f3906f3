"""Data ablations (`refinery ablate CONFIG`): train the same tiny Falcon on each data variant and
compare them on the same held-out text, as RefinedWeb did to show that its filtering pays off.

configs/ablation.yaml cuts its variants from one pipeline config (``base``): each keeps some of
its stages and dedup stages (raw: extraction and language ID; filtered: plus the MDR filters;
refined: plus dedup). `refinery ablate` then:

1. runs every variant's pipeline over the same inputs into ``OUTPUT/variants/NAME/run/``;
2. splits documents into train and held-out parts by a hash of the normalised text of their
   first variant's version (``heldout_fraction``), so a document, and every exact copy of it, is
   held out from all variants or from none;
3. trains one tokenizer (on the first variant's train part) or takes the configured one;
4. tokenizes each variant's train part into ``OUTPUT/variants/NAME/tokens/``, and each eval set
   into ``OUTPUT/eval/SET/``: the held-out documents of a variant, or the held-out part (or all) of
   curated reference files (split by record id, as a mix's ``heldout_fraction`` splits them);
   one task per input shard or file;
5. trains the model of ``model``/``train`` on every variant with every seed, at the same token
   budget, evaluating all of them on the same sets (`refinery/train.py`);
6. writes ``OUTPUT/ablation.json``, ``OUTPUT/ablation.md`` and ``OUTPUT/ablation.png``.

Finished pipeline runs, the tokenizer, each tokenized shard and trainings are reused when the
command is run again (tokenization tasks have markers under ``OUTPUT/_markers/ablate/``).

The modules: :mod:`~refinery.ablate.spec` (the config), :mod:`~refinery.ablate.tokenize` (steps
2-4), :mod:`~refinery.ablate.driver` (the run) and :mod:`~refinery.ablate.results` (step 6).
"""

from refinery.ablate.driver import execute_ablation
from refinery.ablate.spec import AblationSpec, parse_ablation

__all__ = ["AblationSpec", "execute_ablation", "parse_ablation"]
