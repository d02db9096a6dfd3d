"""Chat-completion decoding speed: Juice's loop (inference/decoding.py, what `juice inference` runs)
against Hugging Face `generate` on the same model, prompt and token count, greedy, in one process, best
of N.

    .venv/bin/python benchmarks/chat_decoding.py --model ~/.juice/models/SmolLM2-135M-Instruct

Both decode exactly `--tokens` new tokens (EOS disabled on both sides, so neither stops early), with the
KV cache, batch 1, float32 on CPU. Prints tokens/s of each and their ratio; the replies are checked equal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of
from inference.decoding import ChatModel, Sampling

ASK = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    chat = ChatModel(args.model, device="cpu")
    chat.eos_ids = set()  # decode exactly --tokens on both sides
    prompt = chat.prompt_ids(ASK)
    sampling = Sampling(max_tokens=args.tokens, temperature=0.0)
    ours: list[str] = []

    def juice() -> None:
        ours[:] = ["".join(piece.text for piece in chat.complete(prompt, sampling))]

    theirs: list[list[int]] = []

    @torch.no_grad()
    def hf() -> None:
        out = chat.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=chat.tokenizer.pad_token_id,
        )
        theirs[:] = [out[0, len(prompt) :].tolist()]

    juice()
    hf()  # warm up both
    t_juice = best_of(args.repeats, juice)
    t_hf = best_of(args.repeats, hf)
    same = ours[0] == chat.tokenizer.decode(theirs[0], skip_special_tokens=True)
    print(
        f"model {args.model.name}, prompt {len(prompt)} tokens, {args.tokens} new tokens, {args.threads} threads"
    )
    print(f"juice chat loop : {args.tokens / t_juice:7.1f} tokens/s ({t_juice:.2f} s)")
    print(f"HF generate     : {args.tokens / t_hf:7.1f} tokens/s ({t_hf:.2f} s)")
    print(f"ratio juice/HF  : {t_hf / t_juice:.2f}x   replies identical: {same}")


if __name__ == "__main__":
    main()
