"""The Python API on a tiny LLaMA built from a config: nothing is downloaded.

python examples/python_api.py [OUTPUT_DIR]
"""

import sys
import tempfile
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from dora_plugins import DoraConfig, adapter_config, load_adapter
from dora_plugins.merge import merge_adapter

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
torch.manual_seed(0)
config = LlamaConfig(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
)
LlamaForCausalLM(config).save_pretrained(out / "base")

# 1. A DoRA model with the paper's settings (r=32, alpha=64, dropout 0.05, q,k,v,up,down) ...
model = get_peft_model(AutoModelForCausalLM.from_pretrained(out / "base"), DoraConfig())
model.print_trainable_parameters()
# ... or any registered preset, with overrides: "dora", "dora_half" (DoRA-dagger), "lora".
print(adapter_config("dora_half", lora_dropout=0.0))

# 2. One training step, then save: a plain PEFT checkpoint (peft_type LORA, use_dora true, safetensors).
ids = torch.randint(0, 128, (2, 16))
loss = model(input_ids=ids, labels=ids).loss
loss.backward()
torch.optim.AdamW(p for p in model.parameters() if p.requires_grad).step()
model.save_pretrained(out / "adapter")

# 3. Load it back with our layer (stock PEFT's DoRA adapters load the same way).
reloaded = load_adapter(AutoModelForCausalLM.from_pretrained(out / "base"), out / "adapter").eval()

# 4. Merge into a plain transformers model: no PEFT, no inference overhead (same as `dora merge`).
merge_adapter(out / "base", out / "adapter", out / "merged", overwrite=True)
merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
with torch.no_grad():
    gap = (reloaded(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max().item()
print(f"loss {loss.item():.4f}; max |adapter - merged| logits = {gap:.2e}; files in {out}")
