"""A saved model loads with `trust_remote_code=True` in a Python that cannot import `vaswani_transformer`."""

import shutil
import sys
import textwrap

import torch
from conftest import BLOCK_PACKAGE_IMPORT, run_without_package, tiny_config

from vaswani_transformer import VaswaniTransformerForConditionalGeneration


# Runs in a fresh interpreter: `sys.modules[name] = None` makes every `import vaswani_transformer` fail, so all
# code must come from the files that `save_pretrained` copied next to the weights.
LOAD_WITHOUT_PACKAGE = BLOCK_PACKAGE_IMPORT + textwrap.dedent(
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    model_dir, inputs_file = sys.argv[1], sys.argv[2]
    inputs = torch.load(inputs_file)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert AutoConfig.from_pretrained(model_dir, trust_remote_code=True).model_type == "vaswani_transformer"
    bare = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(bare).__name__ == "VaswaniTransformerModel", type(bare).__name__
    with torch.no_grad():
        logits = model(**inputs["forward"]).logits
        generated = model.generate(**inputs["generate"])
        decoder_states = bare(**inputs["forward"]).last_hidden_state
    torch.save({"logits": logits, "generated": generated, "decoder_states": decoder_states}, inputs_file + ".out")
    """
)


def test_remote_code_load_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config()).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    # The checkout's own package must not be reachable: work from a copy, in a directory outside the repository.
    workdir = tmp_path / "elsewhere"
    shutil.copytree(model_dir, workdir / "model")
    source = torch.randint(4, 1000, (2, 7))
    inputs = {
        "forward": {"input_ids": source, "decoder_input_ids": source[:, :5]},
        "generate": {"input_ids": source, "num_beams": 4, "max_new_tokens": 6},
    }
    torch.save(inputs, workdir / "inputs.pt")
    run_without_package(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, "model", "inputs.pt"], cwd=workdir, hf_home=tmp_path / "hf_home"
    )
    remote = torch.load(workdir / "inputs.pt.out")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(**inputs["forward"]).logits, rtol=0, atol=0)
        expected_states = model.model(**inputs["forward"]).last_hidden_state
        torch.testing.assert_close(remote["decoder_states"], expected_states, rtol=0, atol=0)
        assert torch.equal(remote["generated"], model.generate(**inputs["generate"]))


def test_every_file_the_saved_code_reads_is_a_direct_import_of_the_modeling_file():
    """transformers 5.4 copies into its module cache only the relative imports of the file it loads (the modeling
    file), then reads every file they import in turn (CI's floor job failed on the pipeline's batching file): each
    must also be a relative import of the modeling file."""
    from pathlib import Path

    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    import vaswani_transformer

    modeling = Path(vaswani_transformer.__file__).parent / "modeling_vaswani_transformer.py"
    direct = set(get_relative_imports(str(modeling)))
    transitive = {Path(path).stem for path in get_relative_import_files(str(modeling))}
    assert {"pipeline_translation", "batching_vaswani_transformer"} <= transitive
    assert transitive <= direct, f"read but not copied by transformers 5.4: {sorted(transitive - direct)}"
