"""lm-eval filter that reads the answer label out of a generation with a dora-plugins extractor.

``_template_yaml`` runs it twice, as filter ``improved`` and filter ``original`` (the DoRA paper's
first-match regex), so that each task reports ``acc`` under both, side by side. Extractors come
from the plugin manager, so a plugin's extractor can be used by naming it as ``method``.
"""

from __future__ import annotations

from lm_eval.api.filter import Filter

from dora_plugins.extract import extract_answer


class ExtractAnswer(Filter):
    """Replace every response by ``extract_answer(response, doc's benchmark, method, doc's options)``."""

    def __init__(self, method: str = "improved", **kwargs) -> None:
        super().__init__(**kwargs)
        self.method = method

    def apply(self, resps, docs):
        return [
            [extract_answer(resp, doc["benchmark"], method=self.method, options=doc["options"]) for resp in doc_resps]
            for doc_resps, doc in zip(resps, docs, strict=True)
        ]
