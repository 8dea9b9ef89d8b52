"""Export to CTranslate2, the inference engine of OpenNMT, and translate with the exported model.

- `conversion`: the CTranslate2 model specification, weight by weight, and `export_ctranslate2`;
- `translator`: `Translator`, which translates with the export as the translation pipeline does;
- `cli`: the `vaswani-export-ct2` command.

    from vaswani_transformer.export import Translator, export_ctranslate2

    translator = Translator(export_ctranslate2("outputs/multi30k_en_de_cpu", "outputs/multi30k_en_de_ct2"))
    translator.translate(["A man is riding a bicycle."])

Needs `ctranslate2` (`pip install "vaswani_transformer[export]"`), imported when a model is exported or loaded; this
package never imports the training library.
"""

from .conversion import (
    EXPORT_INFO_FILE,
    QUANTIZATIONS,
    export_ctranslate2,
    transformer_spec,
    translate_batch_options,
)
from .translator import Translator


__all__ = [
    "EXPORT_INFO_FILE",
    "QUANTIZATIONS",
    "Translator",
    "export_ctranslate2",
    "transformer_spec",
    "translate_batch_options",
]
