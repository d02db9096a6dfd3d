"""Command line: train without the service, or convert a GGUF file.

    python -m trainer --config run.yaml [key=value ...]
    python -m trainer import-gguf FILE.gguf DEST_DIR

`run.yaml` holds TrainConfig fields (`model`, `training_file`, `output_dir`, `hyperparameters:` ...).
Overrides use dotted keys and win over the file: `seed=1 hyperparameters.learning_rate=3e-4
hyperparameters.lora.enabled=true mixed_precision=no`; a bare hyperparameter name also works
(`n_epochs=1`). A value is the text as typed, converted by the field's type; only `[a,b]` lists,
`{k: v}` mappings and `null` are read as YAML (`lora.target_modules=[q_proj,v_proj]`). Without
`--config`, the overrides must name at least model, training_file and output_dir. Progress goes to
stdout through PrintSink; under `accelerate launch` only the main process prints. Add
`resume_from=auto` to continue from the newest complete checkpoint in output_dir.
"""

from __future__ import annotations

import argparse
import os
import sys

from trainer.callbacks import PrintSink


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "import-gguf":
        parser = argparse.ArgumentParser(
            prog="python -m trainer import-gguf",
            description="Convert a GGUF file to a Hugging Face directory.",
        )
        parser.add_argument("gguf_file")
        parser.add_argument("dest_dir")
        args = parser.parse_args(argv[1:])
        from trainer.modeling import import_gguf

        print(import_gguf(args.gguf_file, args.dest_dir))
        return 0

    parser = argparse.ArgumentParser(
        prog="python -m trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. hyperparameters.learning_rate=1e-4")
    args = parser.parse_args(argv)

    from trainer import run
    from trainer.checkpointing import find_latest_complete
    from trainer.config import load_config

    try:
        config = load_config(args.config, args.overrides)
    except ValueError as e:
        parser.error(str(e))
    if config.resume_from == "auto":
        latest = find_latest_complete(config.output_dir)
        config = config.model_copy(update={"resume_from": str(latest) if latest else None})
    result = run(config, PrintSink())
    if os.environ.get("RANK", "0") != "0":  # under a launcher only the main process reports
        return 0
    print(
        f"{result.status}: step {result.global_step}, {result.trained_tokens} trained tokens, "
        f"checkpoint {result.final_checkpoint}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
