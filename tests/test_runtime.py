"""os2d.runtime: the allocator settings are chosen by OS2D_ALLOCATOR, applied once, and change no result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from os2d.apps.cli.main import main
from os2d.errors import Os2dError
from os2d.runtime import ENV, MODES, allocator_mode, tune_allocator

GLIBC_LINUX = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")


def run_python(code: str, mode: str) -> dict:
    """Run ``code`` in a fresh interpreter with OS2D_ALLOCATOR=mode; its last stdout line, parsed as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | {ENV: mode}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert allocator_mode() == "heap+thp" == MODES[0]
    monkeypatch.setenv(ENV, " ")
    assert allocator_mode() == "heap+thp"
    monkeypatch.setenv(ENV, " System ")
    assert allocator_mode() == "system"
    monkeypatch.setenv(ENV, "jemalloc")
    with pytest.raises(Os2dError, match="OS2D_ALLOCATOR='jemalloc': choose one of heap\\+thp, heap, thp, system"):
        allocator_mode()
    with pytest.raises(Os2dError, match="allocator mode 'fast'"):
        tune_allocator("fast")


def test_cli_reports_a_bad_mode(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, "jemalloc")
    assert main(["weights", "list"]) == 2
    assert "os2d: error: OS2D_ALLOCATOR='jemalloc'" in capsys.readouterr().err


@pytest.mark.skipif(not GLIBC_LINUX, reason="the settings apply to glibc on Linux only")
def test_settings_applied_once_and_thp_only_before_torch() -> None:
    code = """
        import json, os, sys
        from os2d.runtime import tune_allocator
        first = tune_allocator()
        env = os.environ.get("THP_MEM_ALLOC_ENABLE")
        again = tune_allocator()
        print(json.dumps({"first": first, "again": again, "env": env, "torch": "torch" in sys.modules}))
    """
    assert run_python(code, "heap+thp") == {"first": ["heap", "thp"], "again": ["heap", "thp"], "env": "1",
                                            "torch": False}
    assert run_python(code, "heap") == {"first": ["heap"], "again": ["heap"], "env": None, "torch": False}
    assert run_python(code, "system") == {"first": [], "again": [], "env": None, "torch": False}
    late = """
        import json, os, torch
        from os2d.runtime import tune_allocator
        print(json.dumps({"applied": tune_allocator(), "env": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
    """
    # torch already imported: it has read its environment, so only the heap setting can still take effect
    assert run_python(late, "heap+thp") == {"applied": ["heap"], "env": None}


def test_detections_identical_under_every_setting() -> None:
    code = """
        import hashlib, json
        from os2d.runtime import tune_allocator
        applied = tune_allocator()
        import torch
        from PIL import Image
        from os2d.detector import Detector
        g = torch.Generator().manual_seed(0)
        photo = Image.fromarray((torch.rand(300, 420, 3, generator=g) * 255).byte().numpy())
        det = Detector.from_weights("default")
        det.add_class("patch", photo.crop((100, 80, 220, 170)))
        d = det.detect(photo)
        digest = hashlib.sha256()
        for t in (d.labels, d.scores, d.boxes_xyxy):
            digest.update(t.contiguous().numpy().tobytes())
        print(json.dumps({"applied": applied, "n": len(d), "digest": digest.hexdigest()}))
    """
    system, tuned = run_python(code, "system"), run_python(code, "heap+thp")
    assert system["applied"] == []
    if GLIBC_LINUX:
        assert tuned["applied"] == ["heap", "thp"]
    assert tuned["n"] == system["n"] > 0
    assert tuned["digest"] == system["digest"]
