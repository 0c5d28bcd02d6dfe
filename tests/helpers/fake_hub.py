"""A fake Hugging Face Hub for the push path: the checks before training and the Trainer's uploads, recorded."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

REPO_ID = "tester/tiny-push"


class FakeHub:
    """``whoami``/``create_repo`` of ``HfApi`` (the checks) and the client transformers' Trainer pushes with."""

    def __init__(self, repo_id: str = REPO_ID):
        self.whoami = mock.Mock(return_value={"name": repo_id.split("/")[0]})
        self.check_create_repo = mock.Mock(return_value=mock.Mock(repo_id=repo_id))
        self.api = mock.MagicMock(name="HfApi")
        self.api.create_repo.return_value = mock.Mock(repo_id=repo_id)
        self.api.upload_folder.side_effect = self._upload
        self.uploads: list[dict] = []

    def _upload(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        readme = folder / "README.md"
        self.uploads.append(
            {
                **kwargs,
                "readme": readme.read_text(encoding="utf-8") if readme.is_file() else None,
                "files": sorted(p.name for p in folder.iterdir()),
            }
        )
        return mock.MagicMock(name="CommitInfo")

    def install(self, monkeypatch) -> FakeHub:
        """Patch every Hub call of the push path (online, so the checks run); nothing reaches the network."""
        import huggingface_hub
        import transformers.trainer

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.HfApi, "whoami", self.whoami)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", self.check_create_repo)
        monkeypatch.setattr(transformers.trainer, "hf_api", lambda: self.api)
        return self
