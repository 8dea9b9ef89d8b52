"""sacreBLEU corpus BLEU, lowercased BLEU and chrF as an offline `evaluate` metric (Post, 2018).

`evaluate.load("sacrebleu")` fetches its script from the Hugging Face Hub; this module is the same idea loadable
from a local path with no network:

    metric = evaluate.load("training/metrics/sacrebleu_metric")
    metric.compute(predictions=["a cat"], references=[["a cat"]])

It calls sacrebleu's `BLEU` and `CHRF` classes directly (defaults: 13a tokenisation, exp smoothing, chrF2), so its
scores and signatures are exactly sacrebleu's. Scores are on sacrebleu's 0-100 scale.
"""

from __future__ import annotations

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF


__all__ = ["SacreBleuMetric"]

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_DESCRIPTION = "Corpus-level sacreBLEU (cased and lowercased) and chrF with their reproducibility signatures."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of N hypothesis strings (detokenised text).
    references: list of N lists of R reference strings (every prediction needs the same number R >= 1), or a list
        of N strings (one reference each).
    tokenize: sacreBLEU tokeniser for BLEU ("13a" default, "intl", "zh", "char", "none", ...).
Returns:
    bleu, bleu_lowercase, chrf (floats, 0-100) and bleu_signature, bleu_lowercase_signature, chrf_signature (str);
    also bleu_precisions (list of 4 floats), brevity_penalty, sys_len, ref_len (tokens).
Raises:
    ValueError: if predictions and references differ in length or the number of references varies.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SacreBleuMetric(evaluate.Metric):
    """sacreBLEU BLEU (cased and lowercased) and chrF over a corpus, following sacrebleu's Python API."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            homepage="https://github.com/mjpost/sacrebleu",
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, tokenize: str = "13a") -> dict:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        references = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        num_refs = {len(refs) for refs in references}
        if len(num_refs) > 1:
            raise ValueError(f"every prediction needs the same number of references, got {sorted(num_refs)}")
        # sacrebleu wants one stream per reference set: (R, N), transposed from our (N, R).
        streams = [list(stream) for stream in zip(*references, strict=True)] if references else [[]]
        bleu, bleu_lower, chrf = BLEU(tokenize=tokenize), BLEU(tokenize=tokenize, lowercase=True), CHRF()
        bleu_score = bleu.corpus_score(predictions, streams)
        return {
            "bleu": bleu_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "bleu_lowercase": bleu_lower.corpus_score(predictions, streams).score,
            "bleu_lowercase_signature": str(bleu_lower.get_signature()),
            "chrf": chrf.corpus_score(predictions, streams).score,
            "chrf_signature": str(chrf.get_signature()),
            "bleu_precisions": list(bleu_score.precisions),
            "brevity_penalty": bleu_score.bp,
            "sys_len": bleu_score.sys_len,
            "ref_len": bleu_score.ref_len,
        }
