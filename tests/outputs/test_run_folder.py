import pytest

from innerssl.errors import UserError
from innerssl.outputs.run_folder import resolve_run_folder


def test_new_run_gets_a_timestamped_folder(tmp_path):
    folder = resolve_run_folder(tmp_path, "Model", None, resume=False)
    assert folder.root.parent == tmp_path / "Model" and len(folder.root.name) == 15


def test_resume_picks_the_latest_run_with_a_checkpoint(tmp_path):
    for name in ("old", "new"):
        folder = resolve_run_folder(tmp_path, "Model", name, resume=False)
        folder.checkpoints.mkdir(parents=True)
        folder.last_checkpoint.write_bytes(b"x")
    assert resolve_run_folder(tmp_path, "Model", None, resume=True).root.name == "new"
    assert resolve_run_folder(tmp_path, "Model", "old", resume=True).root.name == "old"
    with pytest.raises(UserError, match="already holds a run: add --resume"):
        resolve_run_folder(tmp_path, "Model", "old", resume=False)
    with pytest.raises(UserError, match="does not exist"):
        resolve_run_folder(tmp_path, "Model", "missing", resume=True)
