"""Evaluation speed of the paper's protocol in lm-eval at several batch sizes, and whether the answers stay the same.

lm-eval's own generate path (``HFLM.generate_until``) on the ``dora_commonsense`` requests (the paper's prompt,
4 beams, 32 new tokens) of the items that ship with the package, for each ``--batch-sizes`` value side by side
in one process (``auto``: lm-eval picks the largest that fits, at most ``--max-batch-size``; its search is
timed too). The model is a random LLaMA built from a config, its EOS made likely enough that answers have all
lengths up to 32 tokens. Prints items per second, the ratio to the first batch size, and how many answers
differ from ``model.generate`` on each item alone (the paper's script); the exit status is 1 if any differs.

    python -m perf.eval_batch
    python -m perf.eval_batch --device cuda --hidden 2048 --layers 8 --items 40 --batch-sizes 1 8 32 auto
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parents[1] / "dora_plugins" / "demo_data" / "eval"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--items", type=int, default=8, help="items per benchmark (at most 40)")
    parser.add_argument("--batch-sizes", nargs="+", default=["1", "8", "auto"])
    parser.add_argument("--max-batch-size", type=int, default=16, help="the most that auto may pick")
    parser.add_argument("--reps", type=int, default=1, help="runs per batch size, interleaved; the median counts")
    parser.add_argument("--eos-scale", type=float, default=3.0, help="scales EOS's embedding: shorter answers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def build_model(directory: Path, hidden: int, layers: int, eos_scale: float = 1.0) -> None:
    """A random LLaMA (heads of 64) and a tokenizer trained on the prompts, saved to ``directory``.

    ``eos_scale`` scales EOS's (tied) embedding, so that its logit, and short answers, become likelier.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = prompt_tokenizer(512)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= eos_scale  # tied: the EOS logit grows
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def prompt_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer of at most ``vocab_size`` ids, trained on the prompts of the shipped items."""
    from dora_plugins.benchmarks import BENCHMARKS, load_llm_adapters
    from dora_plugins.cli.demo_model import build_tokenizer
    from dora_plugins.prompts import eval_prompt

    prompts = [eval_prompt(item["instruction"]) for b in BENCHMARKS for item in load_llm_adapters(DATA_DIR, b.name)]
    return build_tokenizer(prompts, vocab_size=vocab_size)


def requests(limit: int, tasks: str = "dora_commonsense") -> list:
    """lm-eval's generate_until instances of ``tasks`` (a task or a group of the dora_* tasks), ``limit`` items each."""
    from lm_eval.tasks import TaskManager

    from lm_eval_tasks.discovery import TASK_DIR

    manager = TaskManager(include_defaults=False, include_path=TASK_DIR, metadata={"data_dir": str(DATA_DIR)})
    instances = []
    for task in manager.load([tasks])["tasks"].values():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        instances += task.instances
    return instances


def timed_generations(model_dir: Path, batch_size: str, instances: list, args: argparse.Namespace):
    """(answers, seconds) of lm-eval's generate_until at ``batch_size``, the model loaded beforehand."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=str(model_dir), dtype="float32", device=args.device, batch_size=batch_size,
        max_batch_size=args.max_batch_size,
    )  # fmt: skip
    start = time.perf_counter()
    answers = lm.generate_until(instances, disable_tqdm=True)
    return answers, time.perf_counter() - start


def paper_generations(model_dir: Path, instances: list, device: str) -> list[str]:
    """``model.generate`` on each prompt alone, as the paper's script: 4 beams, 32 new tokens, no stop criteria."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = []
    for instance in instances:
        inputs = tokenizer(instance.args[0], return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**inputs, num_beams=4, do_sample=False, max_new_tokens=32)
        answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="eval-batch-") as folder:
        model_dir = Path(folder)
        build_model(model_dir, args.hidden, args.layers, args.eos_scale)
        instances = requests(args.items)
        print(f"eval_batch: {len(instances)} items (8 tasks x {args.items}), {vars(args)}")
        paper = paper_generations(model_dir, instances, args.device)
        seconds: dict[str, list[float]] = {size: [] for size in args.batch_sizes}
        answers: dict[str, list[str]] = {}
        for _ in range(args.reps):
            for size in args.batch_sizes:
                answers[size], elapsed = timed_generations(model_dir, size, instances, args)
                seconds[size].append(elapsed)
    lengths = sorted(len(answer) for answer in paper)
    print(f"answer length in characters: min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    first = args.batch_sizes[0]
    print(f"{'batch size':<12}{'items/s':>10}{f'vs {first}':>10}{'differ from model.generate':>30}")
    rates = {size: len(instances) / statistics.median(times) for size, times in seconds.items()}
    differ = {size: sum(a != b for a, b in zip(answers[size], paper, strict=True)) for size in args.batch_sizes}
    for size in args.batch_sizes:
        print(f"{size:<12}{rates[size]:>10.2f}{rates[size] / rates[first]:>10.2f}{differ[size]:>24} of {len(paper)}")
    return 1 if any(differ.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
