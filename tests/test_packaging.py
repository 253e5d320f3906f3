"""An install is complete by itself: the language-ID model ships inside refinery, and refinery's
child processes import the refinery their parent imported, even beside a source checkout."""

from __future__ import annotations

import subprocess
import sys

from support import REPO


def test_the_language_id_model_ships_inside_the_package():
    from refinery.stages.language_id import default_model_path

    path = default_model_path()
    assert path.is_file() and path.stat().st_size == 938013
    assert (path.parent / "NOTICE.md").read_text().count("CC BY-SA 3.0") >= 1


def test_a_folder_named_refinery_in_the_working_directory_does_not_shadow_the_extractor(tmp_path):
    (tmp_path / "refinery").mkdir()
    (tmp_path / "refinery" / "__init__.py").write_text("")  # a checkout's package without its stages
    code = ("import sys; sys.path.remove(''); "
            "from refinery.sandbox import ProcessSandbox; "
            "box = ProcessSandbox('refinery.stages.html_extract:extract_text', dict(url='http://x', "
            "extractor='resiliparse', favor_precision=True, include_tables=True, include_comments=False), 30); "
            "print(box.call('<html><body><p>' + 'An English sentence about the sea and ships. ' * 20 + '</p></body></html>')[:20])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("An English sentence")


def test_pyproject_installs_stages_and_tokenizer_under_refinery():
    text = (REPO / "pyproject.toml").read_text()
    assert '"refinery.stages" = "stages"' in text and '"refinery.tokenizer" = "tokenizer"' in text
