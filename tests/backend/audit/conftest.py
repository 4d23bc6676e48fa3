import pytest


@pytest.fixture
def sink_file(tmp_path, settings):
    """The checkpoints' sink: a file of this test's own."""
    path = tmp_path / "checkpoints.jsonl"
    settings.AUDIT_CHECKPOINT_SINK = f"file://{path}"
    return path
