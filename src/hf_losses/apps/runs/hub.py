"""The Hugging Face Hub: check before training that the run can push, and push at the end."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def check_hub_access(training_args) -> None:
    """With --push_to_hub, fail before training unless the Hub is reachable and the token can write the repo."""
    if not training_args.push_to_hub:
        return
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise UsageError(
            "--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set; unset it or drop --push_to_hub"
        )
    token = training_args.hub_token or get_token()
    if not token:
        raise UsageError(
            "--push_to_hub needs a Hub token: run `hf auth login`, set HF_TOKEN or pass --hub_token"
        )
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
        if "/" not in repo_id:
            repo_id = f"{user}/{repo_id}"
        api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True)
    except Exception as err:  # network errors, 401/403 from the Hub: all mean "cannot push"
        reason = " ".join(str(err).split())[:200]
        raise UsageError(
            f"--push_to_hub: cannot write to Hub repo {repo_id} ({type(err).__name__}: {reason})"
        ) from err


def push_output_dir(trainer, training_args) -> None:
    """Push output_dir if asked; when that fails, say that everything is complete locally and how to upload."""
    if not training_args.push_to_hub:
        return
    try:
        trainer.push_to_hub(commit_message="End of training")
    except Exception as err:
        repo = training_args.hub_model_id or Path(training_args.output_dir).name
        raise UsageError(
            f"training finished but the push to {repo} failed ({type(err).__name__}: {err}); the model, tokenizer "
            f"and card are complete in {training_args.output_dir}: upload them later with "
            f"`hf upload {repo} {training_args.output_dir}`"
        ) from err
