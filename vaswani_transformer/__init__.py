"""vaswani_transformer: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017) for transformers.

Importing the package registers the configuration, models and tokenizer with the transformers Auto classes, and
marks them for `register_for_auto_class`, so that `save_pretrained` writes `auto_map` and copies the code files:
a saved model then loads with `trust_remote_code=True` in a Python where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

from .configuration_vaswani_transformer import VaswaniTransformerConfig
from .modeling_vaswani_transformer import (
    VaswaniTransformerForConditionalGeneration,
    VaswaniTransformerModel,
    VaswaniTransformerPreTrainedModel,
)
from .pipeline_translation import TranslationPipeline, save_translation_pipeline
from .tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


__all__ = [
    "TranslationPipeline",
    "VaswaniTransformerConfig",
    "VaswaniTransformerForConditionalGeneration",
    "VaswaniTransformerModel",
    "VaswaniTransformerPreTrainedModel",
    "VaswaniTransformerTokenizerFast",
    "save_translation_pipeline",
]

__version__ = "0.1.0"

AutoConfig.register(VaswaniTransformerConfig.model_type, VaswaniTransformerConfig, exist_ok=True)
AutoModel.register(VaswaniTransformerConfig, VaswaniTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration, exist_ok=True)
AutoTokenizer.register(VaswaniTransformerConfig, tokenizer_class=VaswaniTransformerTokenizerFast, exist_ok=True)
VaswaniTransformerConfig.register_for_auto_class()
VaswaniTransformerModel.register_for_auto_class("AutoModel")
VaswaniTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
VaswaniTransformerTokenizerFast.register_for_auto_class("AutoTokenizer")
