"""The LLM path against a real llama.cpp server (SmolLM2-135M) on 127.0.0.1."""

import json
import re
import socket
import urllib.request

import pandas as pd
import pytest
from test_augment import files  # noqa: F401  (the tiny data set and base model)

from pipelines.cli import main
from recsys.augment.llm import REFUSAL, LLMClient, LLMSettings, render
from recsys.augment.local_llm import local_server
from recsys.errors import RecsysError


@pytest.fixture(scope="module")
def server():
    with local_server(context=1024, parallel=2, threads=1) as url:
        yield url
    host, port = re.match(r"http://([\d.]+):(\d+)/v1", url).groups()
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.create_connection((host, int(port)), timeout=1).close()


def server_counters(url: str) -> dict[str, float]:
    """Prompt and generated token totals from the server's own /metrics."""
    text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=10).read().decode()
    return {k: float(v) for k, v in re.findall(
        r"^llamacpp:(prompt_tokens_total|tokens_predicted_total) (\S+)$", text, re.M)}


def settings(url, cache, **kw):
    return LLMSettings(base_url=url, model="smollm2", cache_dir=str(cache), max_tokens=6,
                       temperature=0.0, concurrency=2, **kw)


def digit(text: str) -> int | None:
    return int(text.strip()) if text.strip().isdigit() else None


def test_answers_are_cached_and_failures_counted(server, tmp_path):
    prompts = [[{"role": "user", "content": f"What is {a} plus {a}? Reply with the number only."}]
               for a in (1, 2, 3)]
    before = server_counters(server)
    parsed, raw, stats = LLMClient(settings(server, tmp_path), progress=False).ask(prompts, digit)
    assert stats.calls == 3 and stats.cached == 0 and stats.errors == 0
    assert all(isinstance(r, str) for r in raw)
    after = server_counters(server)
    assert after["prompt_tokens_total"] > before["prompt_tokens_total"]
    # counting matches an independent reading of the raw answers
    refused = sum(bool(REFUSAL.match(r)) for r in raw)
    unparsed = sum(digit(r) is None and not REFUSAL.match(r) for r in raw)
    assert (stats.refusals, stats.parse_failures) == (refused, unparsed)
    assert parsed == [None if REFUSAL.match(r) else digit(r) for r in raw]
    assert stats.parse_failure_rate == pytest.approx((refused + unparsed) / 3)

    # a rerun (a new client, same cache) makes no call: the server's counters do not move
    again, raw2, stats2 = LLMClient(settings(server, tmp_path), progress=False).ask(prompts, digit)
    assert (stats2.calls, stats2.cached) == (0, 3) and raw2 == raw and again == parsed
    assert server_counters(server) == after

    # a parser that rejects everything: every answer is a counted failure, none is kept
    none, _, stats3 = LLMClient(settings(server, tmp_path), progress=False).ask(prompts, lambda t: None)
    assert none == [None] * 3 and stats3.parse_failures + stats3.refusals == 3


def test_unreachable_server_is_one_clear_error(free_port, tmp_path):
    client = LLMClient(settings(f"http://127.0.0.1:{free_port}/v1", tmp_path, max_retries=0),
                       progress=False)
    with pytest.raises(RecsysError, match="cannot reach the LLM server"):
        client.ask([[{"role": "user", "content": "hi"}]], digit)


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RECSYS_LLM_MODEL", "m")
    monkeypatch.setenv("RECSYS_LLM_CONCURRENCY", "3")
    s = LLMSettings.from_env(model="other")
    assert (s.base_url, s.model, s.concurrency) == ("http://127.0.0.1:1/v1", "other", 3)
    monkeypatch.setenv("RECSYS_LLM_CONCURRENCY", "0")
    with pytest.raises(RecsysError, match=r"concurrency \(RECSYS_LLM_CONCURRENCY, or --llm-concurrency\)"):
        LLMSettings.from_env()
    monkeypatch.delenv("RECSYS_LLM_CONCURRENCY")
    monkeypatch.delenv("RECSYS_LLM_BASE_URL")  # the flag is --llm-url
    with pytest.raises(RecsysError, match=r"base_url \(RECSYS_LLM_BASE_URL, or --llm-url\)"):
        LLMSettings.from_env()
    monkeypatch.setenv("RECSYS_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RECSYS_LLM_TIMEOUT", "0")  # no flag: the variable alone is named
    with pytest.raises(RecsysError, match=r"timeout \(RECSYS_LLM_TIMEOUT\): "):
        LLMSettings.from_env()


def test_refusal_pattern():
    assert REFUSAL.match("I'm sorry, but I can't help with that")
    assert REFUSAL.match("As an AI language model, I cannot")
    assert not REFUSAL.match("liked: 1, disliked: 2")


def test_prompt_templates_render():
    messages = render("edge", history="- a", candidates="1. b\n2. c")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "1. b\n2. c" in messages[1]["content"] and "$" not in messages[1]["content"]
    with pytest.raises(RecsysError, match="needs field 'candidates'"):
        render("edge", history="- a")


def test_cli_llm_augmentation_reruns_from_the_cache(server, files, tmp_path, capsys):  # noqa: F811
    argv = ["augment", "--train", files / "train.csv", "--item-text", files / "items.csv",
            "--base", files / "pop", "--augmenter", "llm", "--llm-url", server, "--llm-model",
            "smollm2", "--llm-tasks", "edges,users", "--users", "2", "--candidates", "3",
            "--llm-max-tokens", "20", "--llm-structured", "--llm-cache", tmp_path / "cache"]
    for n in (1, 2):
        assert main([str(a) for a in argv + ["--out", tmp_path / f"aug{n}"]]) == 0
    first, second = (json.loads((tmp_path / f"aug{n}" / "manifest.json").read_text())["llm"]
                     for n in (1, 2))
    for task in ("edges", "users"):
        assert (first["stats"][task]["calls"], first["stats"][task]["cached"]) == (2, 0)
        assert (second["stats"][task]["calls"], second["stats"][task]["cached"]) == (0, 2)
    edges = first["stats"]["edges"]
    triples = pd.read_csv(tmp_path / "aug1" / "triples.csv")
    # each parsed answer gave one triple; failures and refusals gave none
    assert len(triples) == 2 - edges["parse_failures"] - edges["refusals"]
    assert pd.read_csv(tmp_path / "aug2" / "triples.csv").equals(triples)
    assert "llm edges: 2 calls" in capsys.readouterr().out
