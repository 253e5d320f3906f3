"""Large string lists as memory-mapped hashes (refinery/hashed_list.py): the same membership as
datatrove's list parsing, one cache file per source file, rebuilt when the source changes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from refinery.hashed_list import HashedList, cache_dir


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINERY_CACHE_DIR", str(tmp_path / "cache"))


def test_membership_is_datatrove_parse_list_membership(tmp_path):
    from datatrove.pipeline.filters.url_filter import get_list

    source = tmp_path / "domains"
    source.write_text("# a comment\nexample.com\n  spaced.org  \n\nbad.net\n#not-a-domain.com\nlast.io")
    theirs = get_list(str(tmp_path), "domains", {"extra.example"}, do_normalize=False)
    ours = HashedList.load(source, extra={"extra.example"})
    probes = ["example.com", "spaced.org", "bad.net", "last.io", "", "extra.example", "#not-a-domain.com",
              "# a comment", "example.co", "www.example.com", "spaced.org  ", 42]
    assert [p in ours for p in probes] == [p in theirs for p in probes]


def test_the_cache_is_mapped_reused_and_rebuilt_when_the_source_changes(tmp_path):
    source = tmp_path / "urls"
    source.write_text("a.example/x\nb.example/y\n")
    first = HashedList.load(source)
    files = sorted(cache_dir().glob("urls-*.npy"))
    assert len(files) == 1 and isinstance(first.hashes, np.memmap) and len(first) == 2
    stamp = files[0].stat().st_mtime_ns
    assert "a.example/x" in HashedList.load(source) and files[0].stat().st_mtime_ns == stamp  # reused
    source.write_text("c.example/z\n")
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))
    changed = HashedList.load(source)
    assert "c.example/z" in changed and "a.example/x" not in changed
    assert len(list(cache_dir().glob("urls-*.npy"))) == 2  # a new file; the old one is not deleted
    damaged = sorted(cache_dir().glob("urls-*.npy"), key=lambda p: p.stat().st_mtime_ns)[-1]
    damaged.write_bytes(b"not a numpy file")
    assert "c.example/z" in HashedList.load(source)  # rebuilt


def test_without_a_writable_cache_it_still_works(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("REFINERY_CACHE_DIR", str(blocked))  # a file where the folder should be
    source = tmp_path / "list"
    source.write_text("x.example\n")
    assert "x.example" in HashedList.load(source) and "y.example" not in HashedList.load(source)
