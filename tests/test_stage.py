"""Stage runner: freshness, invalidation downstream, atomic output, resume of partial output."""
import json

import pytest

from pipeline.runtime.stage import StageError, read_manifest, run_stage, stage_status, digest


def _writer(text, calls):
    def run(ctx):
        calls.append(ctx.name)
        (ctx.out / "out.txt").write_text(text)
        return {"counts": {"n": 1}, "metrics": {"m": 0.5}}
    return run


def test_fresh_stage_skips_and_force_reruns(tmp_path):
    calls = []
    m1 = run_stage("a", (), _writer("x", calls), {}, {"k": 1}, tmp_path)
    m2 = run_stage("a", (), _writer("x", calls), {}, {"k": 1}, tmp_path)
    assert calls == ["a"] and m1["run_digest"] == m2["run_digest"]
    m3 = run_stage("a", (), _writer("x", calls), {}, {"k": 1}, tmp_path, force=True)
    assert calls == ["a", "a"] and m3["run_digest"] != m1["run_digest"]
    man = read_manifest(tmp_path / "a")
    assert man["counts"] == {"n": 1} and man["metrics"] == {"m": 0.5}
    assert man["config"] == {"k": 1} and man["config_digest"] == digest({"k": 1})


def test_config_change_reruns_and_downstream_becomes_stale(tmp_path):
    calls = []
    run_stage("a", (), _writer("x", calls), {}, {"k": 1}, tmp_path)
    run_stage("b", ("a",), _writer("y", calls), {}, {"j": 1}, tmp_path)
    assert stage_status(tmp_path, "b", ("a",), digest({"j": 1}))[0] == "fresh"
    run_stage("a", (), _writer("x2", calls), {}, {"k": 2}, tmp_path)      # upstream re-runs
    state, reason = stage_status(tmp_path, "b", ("a",), digest({"j": 1}))
    assert state == "stale" and "'a'" in reason
    run_stage("b", ("a",), _writer("y", calls), {}, {"j": 1}, tmp_path)
    assert calls == ["a", "b", "a", "b"]
    # changing only b's own config re-runs b, not a
    run_stage("a", (), _writer("x2", calls), {}, {"k": 2}, tmp_path)
    run_stage("b", ("a",), _writer("y", calls), {}, {"j": 3}, tmp_path)
    assert calls == ["a", "b", "a", "b", "b"]
    assert read_manifest(tmp_path / "b")["upstream"]["a"] == read_manifest(tmp_path / "a")["run_digest"]


def test_missing_upstream_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="make a"):
        run_stage("b", ("a",), _writer("y", []), {}, {}, tmp_path)


def test_interrupted_stage_keeps_previous_output_and_resumes(tmp_path):
    calls = []
    run_stage("a", (), _writer("old", calls), {}, {"k": 1}, tmp_path)

    def crash(ctx):
        (ctx.out / "checkpoint.txt").write_text("step 5")
        (ctx.out / "out.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("a", (), crash, {}, {"k": 2}, tmp_path)
    # the finished output is untouched and still describes the old config
    assert (tmp_path / "a" / "out.txt").read_text() == "old"
    assert read_manifest(tmp_path / "a")["config"] == {"k": 1}
    seen = {}

    def resume(ctx):
        seen["resumed"] = ctx.resumed
        seen["ckpt"] = (ctx.out / "checkpoint.txt").read_text()
        (ctx.out / "out.txt").write_text("new")
        return {}

    run_stage("a", (), resume, {}, {"k": 2}, tmp_path)
    assert seen == {"resumed": True, "ckpt": "step 5"}
    assert (tmp_path / "a" / "out.txt").read_text() == "new"
    assert not (tmp_path / ".partial" / "a").exists()


def test_partial_output_of_another_config_is_wiped(tmp_path):
    def crash(ctx):
        (ctx.out / "junk.txt").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage("a", (), crash, {}, {"k": 1}, tmp_path)
    seen = {}

    def fresh(ctx):
        seen["resumed"] = ctx.resumed
        seen["junk"] = (ctx.out / "junk.txt").exists()
        return {}

    run_stage("a", (), fresh, {}, {"k": 2}, tmp_path)
    assert seen == {"resumed": False, "junk": False}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["config"] == {"k": 2}


def test_execution_only_keys_keep_a_stage_fresh(tmp_path):
    from pipeline.runtime.stage import EXECUTION_KEYS, config_digests

    assert {"workers", "writers"} <= EXECUTION_KEYS
    calls = []

    def run(ctx):
        calls.append(1)
        return {}

    sec = {"k": 1, "crf": {"preset": "x", "workers": 2}, "writers": 2}
    run_stage("a", (), run, {}, sec, tmp_path)
    for changed in ({**sec, "writers": 8}, {**sec, "crf": {"preset": "x", "workers": 8}},
                    {"k": 1, "crf": {"preset": "x"}}):
        run_stage("a", (), run, {}, changed, tmp_path)
    assert len(calls) == 1                                   # pools and writers: still fresh
    run_stage("a", (), run, {}, {**sec, "crf": {"preset": "y", "workers": 2}}, tmp_path)
    assert len(calls) == 2                                   # a result-changing key: re-run
    # a manifest written before the rule (digest of the whole section) is accepted as fresh
    new, legacy = config_digests(sec)
    assert new != legacy and new == config_digests({**sec, "workers": 5})[0]
    assert stage_status(tmp_path, "a", (), (new, legacy))[0] == "stale"   # config "y" stored
    man = read_manifest(tmp_path / "a")
    man["config_digest"] = legacy
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    run_stage("a", (), run, {}, sec, tmp_path)
    assert len(calls) == 2
