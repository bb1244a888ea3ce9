"""Every evaluation writes a manifest into results.json, and the same eval run twice gives the same
numbers and the same manifest (a tiny real model, a real sandbox, two questions)."""

from __future__ import annotations

import json

import torl
from torl.eval.manifest import file_sha256, weights_sha256
from torl.eval.runner import EvalConfig, run_eval


def test_two_runs_give_identical_results_and_manifests(tmp_path):
    from conftest import save_tiny_llama

    model = save_tiny_llama(tmp_path / "tiny")
    bench = tmp_path / "two.jsonl"
    bench.write_text(json.dumps({"id": "a", "problem": "What is 6*7?", "answer": "42"}) + "\n"
                     + json.dumps({"id": "b", "problem": "What is 2+2?", "answer": "4"}) + "\n")
    results = []
    for out in ("first", "second"):
        cfg = EvalConfig(model=str(model), benchmarks=[str(bench)], out_dir=str(tmp_path / out),
                         overrides={"max_response_tokens": 24},
                         temperature=0.8, top_p=0.9, n=2, seed=7, device="cpu")
        run_eval(cfg, progress=False)
        results.append(json.loads((tmp_path / out / "results.json").read_text()))
    first, second = results
    assert first["manifest"] == second["manifest"]
    assert first["benchmarks"] == second["benchmarks"] and first["average"] == second["average"]
    texts = [[json.loads(line)["trajectory"]["text"] for line in (tmp_path / out / "trajectories.jsonl").open()]
             for out in ("first", "second")]
    assert sorted(texts[0]) == sorted(texts[1]) and any(texts[0])

    manifest = first["manifest"]
    assert manifest["torl_version"] == torl.__version__
    assert manifest["model"]["path"] == str(model)
    assert manifest["model"]["weights_sha256"] == weights_sha256(model) and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["task"]["max_response_tokens"] == 24 and manifest["task"]["template"] == "torl"
    assert manifest["decoding"] == {"temperature": 0.8, "top_p": 0.9, "n": 2}
    assert manifest["engine"] == {"name": "transformers", "device": "cpu"}
    entry = manifest["benchmarks"][str(bench)]
    assert entry["sha256"] == file_sha256(bench) and entry["problems"] == 2 and entry["question_ids"] == ["a", "b"]
    assert manifest["seeds"]["seed"] == 7 and "derive_seed" in manifest["seeds"]["per_sample"]


def test_the_weights_hash_changes_with_the_weights(tmp_path):
    from conftest import save_tiny_llama

    a = save_tiny_llama(tmp_path / "a")
    b = save_tiny_llama(tmp_path / "b", hidden_size=64, heads=4, kv_heads=2)
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(a) == weights_sha256(save_tiny_llama(tmp_path / "a2"))  # same seed, same weights
