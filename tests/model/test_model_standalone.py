"""`model/` stands alone: it builds and runs a network where `pipeline` cannot be imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_model_builds_and_runs_without_pipeline():
    script = textwrap.dedent("""
        import importlib.abc, sys

        class NoPipeline(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "pipeline" or name.startswith("pipeline."):
                    raise ImportError("pipeline is blocked in this test")
                return None

        sys.meta_path.insert(0, NoPipeline())
        import torch
        import model
        from model.config import ModelConfig
        from model.checkpoint import save_model_checkpoint, load_model_checkpoint
        cfg = ModelConfig(image_size=32, latent_dim=16, embed_dim=32, depth=2, num_heads=2, mult_dim=16,
                          ita_dim=16, temporal_dim=32, temporal_heads=2, temporal_head_dim=16,
                          temporal_mlp_dim=64, num_frames=4, num_classes=3)
        net = model.build_model(cfg).eval()
        with torch.no_grad():
            out = net(torch.rand(2, 4, 3, 32, 32), torch.randn(2, 1, 512, 128))
        assert out.shape == (2, 3), out.shape
        assert not any(m.startswith("pipeline") for m in sys.modules)
        print("ok", tuple(out.shape))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok (2, 3)" in done.stdout
