"""Generate real SmolLM2 answers to the paper's eval prompts, for the hand-labelled ``tests/data/smollm2_labels.jsonl``.

For one model (the base SmolLM2-135M-Instruct, or the base with a PEFT adapter checkpoint) and every benchmark,
``--per-benchmark`` items are drawn with a fixed seed from LLM-Adapters' ``<data>/llm_adapters/<benchmark>/test.json``
(HellaSwag: the 40 items of ``dora_plugins/demo_data/eval/hellaswag/test.json``), leaving out every item whose
instruction is in the adapters' training file (``--train``), and answered as the paper's evaluation script does:
the eval prompt (:func:`dora_plugins.prompts.eval_prompt`), beam search with 4 beams, no sampling, at most 32 new
tokens. Generation runs in batches on the CPU (left padding), on ``--threads`` threads.

Each row keeps its source (``base`` or ``<adapter>@<checkpoint>``), the benchmark, the item index, the question, the
option texts, what the model wrote and the gold answer, plus empty ``label``, ``ambiguous`` and ``why`` fields for
the person who labels it (``tools/sample_extract_rows.py --show`` prints rows without gold or any extractor output).
Rows are appended to ``--output``; items already there for the same source are skipped, so a run can resume.

The set in the repository: adapters trained with ``dora sft --model_name_or_path smollm2-135m --dataset_name
dora_plugins/demo_data/train.json --preset {lora,dora} --max_steps 20 --save_steps 5 --per_device_train_batch_size 2
--learning_rate 2e-3 --max_length 256 --gradient_checkpointing false --seed 0`` (CPU, fp32), then:

    python tools/sample_smollm2_generations.py --data ../shared/data --source base --per-benchmark 20 --output X
    python tools/sample_smollm2_generations.py --data ../shared/data --source lora@5 \\
        --adapter runs/lora/checkpoint-5 --per-benchmark 10 --output X
    python tools/sample_smollm2_generations.py --demo-items --source dora@5 \\
        --adapter runs/dora/checkpoint-5 --per-benchmark 14 --output X    # also dora@10, lora@10 (14), lora@20 (10)

then labelled by hand (``tests/data/README.md``). Generation on a shared 2-core CPU was stopped before every
source reached its count: the set holds what was generated, each row labelled.

The second round (rows 349-756, sampled and labelled after the rules of ``dora_plugins/answer_forms.py`` were
written) adds the base model's next items and the adapters of the real demo (``dora demo``: LoRA and DoRA, 24
steps of 4 records, learning rate 1e-3, checkpoints every 6 steps, in ``/work/demo-real``):

    python tools/sample_smollm2_generations.py --data ../shared/data --source base --per-benchmark 40 --output X
    python tools/sample_smollm2_generations.py --data ../shared/data --source lora@6 \\
        --adapter /work/demo-real/lora/checkpoint-6 --per-benchmark 6 --output X      # also dora@6
    python tools/sample_smollm2_generations.py --data ../shared/data --source lora@12 \\
        --adapter /work/demo-real/lora/checkpoint-12 --per-benchmark 3 --output X     # also dora@12
    # lora@18, dora@18, lora@24, dora@24: --per-benchmark 2

with ``X`` the set itself, so that items already there are skipped. Rounds three to nine: the base model again,
``--per-benchmark`` 52, 64, 84, 104, 124, 144 and 164 (each the next items of the same seeded draw; the ninth,
``--threads 1``, was generated into a copy of the set and its 140 new rows appended after labelling). Round ten,
generated into two copies of the set and appended after labelling (536 rows): the base model's next items
(``--per-benchmark 204``), and the adapters of the current demo (``dora demo``: 24 steps of 4 accumulated records,
learning rate 3e-4, checkpoints every 6 steps) at every checkpoint:

    python tools/sample_smollm2_generations.py --data ../shared/data --source base --per-benchmark 204 --output X
    python tools/sample_smollm2_generations.py --data ../shared/data --source demo2-lora@6 \\
        --adapter demo/lora/checkpoint-6 --per-benchmark 4 --output Y    # also @12, @18, @24 and demo2-dora@...

Round eleven, the same way: ``--per-benchmark 244`` for the base model and 8 for each adapter checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from dora_plugins.benchmarks import BENCHMARKS, load_llm_adapters
from dora_plugins.prompts import eval_prompt
from dora_plugins.records import read_records

REPO = Path(__file__).resolve().parents[1]
DEMO_EVAL = REPO / "dora_plugins/demo_data/eval"
DEMO_TRAIN = REPO / "dora_plugins/demo_data/train.json"
SHARED_DATA = Path(os.environ.get("DORA_SHARED_DATA") or REPO.parent / "shared/data")


def items(data: Path | None, benchmark: str) -> list[dict]:
    """The benchmark's eval items: from LLM-Adapters' test.json in ``data``; from the demo sample (the first 40
    items of each test.json, and HellaSwag's) when ``data`` is None or lacks the benchmark."""
    folder = data / "llm_adapters" if data else DEMO_EVAL
    if not (folder / benchmark).is_dir():
        folder = DEMO_EVAL
    return load_llm_adapters(folder, benchmark)


def draw(
    data: Path | None, benchmark: str, count: int, seed: int, source: str, trained: set[str]
) -> list[tuple[int, dict]]:
    """``count`` (index, item) pairs of the benchmark, shuffled with a seed per source, never a trained item."""
    pool = [(i, item) for i, item in enumerate(items(data, benchmark)) if item["instruction"] not in trained]
    random.Random(f"{seed}:{source}:{benchmark}").shuffle(pool)
    return pool[:count]


def load_model(model: str, adapter: str | None, threads: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dora_plugins.pull import resolve_model

    torch.set_num_threads(threads)
    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    network = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter).merge_and_unload()
    return tokenizer, network.eval()


def generate(tokenizer, network, instructions: list[str], beams: int = 4) -> list[str]:
    """The paper's generation: 4 beams, no sampling, at most 32 new tokens; the new text only.

    The prompts are run once and their cache repeated for each beam (``generate`` would run each prompt once per
    beam): the same tokens come out, in a third less time.
    """
    import torch

    batch = tokenizer([eval_prompt(i) for i in instructions], return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate computes them under left padding
        cache = network(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True
        ).past_key_values
        cache.batch_repeat_interleave(beams)
        out = network.generate(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=cache,
            num_beams=beams,
            do_sample=False,
            max_new_tokens=32,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument(
        "--demo-items", action="store_true", help="draw from dora_plugins/demo_data/eval only (40 items each)"
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", help="a PEFT adapter folder (a checkpoint-N of dora sft); none: the base model")
    parser.add_argument("--source", required=True, help="what to call this model in the rows: base, dora@10, ...")
    parser.add_argument("--per-benchmark", type=int, default=20)
    parser.add_argument("--benchmarks", nargs="*", default=[b.name for b in BENCHMARKS])
    parser.add_argument("--train", type=Path, default=DEMO_TRAIN, help="the adapters' training records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, required=True, help="JSON Lines, appended to")
    args = parser.parse_args()
    trained = {record["instruction"] for record in read_records(args.train)}
    done = {row["id"] for row in read_records(args.output)} if args.output.is_file() else set()
    tokenizer, network = load_model(args.model, args.adapter, args.threads)
    for benchmark in args.benchmarks:
        todo = [
            (i, item)
            for i, item in draw(
                None if args.demo_items else args.data, benchmark, args.per_benchmark, args.seed, args.source, trained
            )
            if f"{args.source}:{benchmark}:{i}" not in done
        ]
        for at in range(0, len(todo), args.batch_size):
            chunk = todo[at : at + args.batch_size]
            began = time.process_time()
            outputs = generate(tokenizer, network, [item["instruction"] for _, item in chunk])
            rows = [
                {
                    "id": f"{args.source}:{benchmark}:{i}",
                    "source": args.source,
                    "benchmark": benchmark,
                    "index": i,
                    "question": item["instruction"].split("\n\n", 1)[0],
                    "options": item["options"],
                    "output_pred": output,
                    "answer": item["answer"],
                    "label": None,
                    "ambiguous": None,
                    "why": None,
                }
                for (i, item), output in zip(chunk, outputs, strict=True)
            ]
            with args.output.open("a", encoding="utf-8") as sink:
                sink.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            print(f"{args.source} {benchmark}: {len(chunk)} items, {time.process_time() - began:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main()
