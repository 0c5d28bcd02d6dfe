"""hf_losses.apps.runs.hub: the checks before training that a push can succeed, and the push at the end (fake Hub)."""

from __future__ import annotations

from unittest import mock

import pytest

from hf_losses import EncouragingSeq2SeqConfig
from hf_losses.apps.runs import UsageError
from hf_losses.apps.runs.hub import check_hub_access, push_output_dir

TOKEN = "hf_" + "x" * 30


def config(tmp_path, **kwargs) -> EncouragingSeq2SeqConfig:
    return EncouragingSeq2SeqConfig(output_dir=str(tmp_path / "tiny-push"), push_to_hub=True, **kwargs)


def test_nothing_is_checked_without_push_to_hub(tmp_path, fake_hub):
    check_hub_access(EncouragingSeq2SeqConfig(output_dir=str(tmp_path)))
    fake_hub.whoami.assert_not_called()


def test_the_repo_is_created_under_the_user_with_the_privacy_asked(tmp_path, fake_hub):
    check_hub_access(config(tmp_path, hub_token=TOKEN, hub_private_repo=True))
    fake_hub.whoami.assert_called_once()
    assert fake_hub.check_create_repo.call_args.args[0] == "tester/tiny-push"  # from output_dir's name
    assert fake_hub.check_create_repo.call_args.kwargs == {"private": True, "exist_ok": True}


def test_offline_is_refused_before_any_call(tmp_path, fake_hub, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        check_hub_access(config(tmp_path, hub_token=TOKEN))
    fake_hub.whoami.assert_not_called()


def test_no_token_is_refused(tmp_path, fake_hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UsageError, match="needs a Hub token"):
        check_hub_access(config(tmp_path))


def test_a_token_that_cannot_write_is_refused_without_showing_it(tmp_path, fake_hub):
    fake_hub.whoami.side_effect = RuntimeError("401 Client Error: Unauthorized")
    with pytest.raises(UsageError) as error:
        check_hub_access(config(tmp_path, hub_token=TOKEN, hub_model_id="tester/tiny-push"))
    message = str(error.value)
    assert "tester/tiny-push" in message and "401" in message and TOKEN not in message
    fake_hub.api.upload_folder.assert_not_called()


def test_a_failed_push_says_the_output_is_complete_and_how_to_upload(tmp_path):
    trainer = mock.Mock()
    trainer.push_to_hub.side_effect = ConnectionError("reset by peer")
    args = config(tmp_path, hub_model_id="me/model")
    with pytest.raises(UsageError) as error:
        push_output_dir(trainer, args)
    assert "reset by peer" in str(error.value) and f"hf upload me/model {args.output_dir}" in str(error.value)
    trainer.push_to_hub.assert_called_once_with(commit_message="End of training")
