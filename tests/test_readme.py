"""The commands in README.md work as written (run from the README text itself)."""

from __future__ import annotations

import json
import random
import re
import subprocess

import httpx
import pytest

from tests.support import REPO, VENV_BIN, free_port, process, wait_http

README = (REPO / "README.md").read_text()


def readme_block(name: str, lang: str = "bash") -> str:
    match = re.search(rf"<!-- readme-test: {name} -->\s*```{lang}\n(.*?)```", README, re.DOTALL)
    assert match, f"README has no block marked readme-test: {name}"
    return match.group(1)


def write_jsonl(path, texts) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def shuffled_human(human_documents, seed: int) -> list[str]:
    docs = list(dict.fromkeys(human_documents))  # unique, order kept
    random.Random(seed).shuffle(docs)
    return docs


def json_objects(text: str) -> list:
    """The JSON documents printed one after another (curl adds no newline)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


def run_block(block: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    (cwd / ".venv").symlink_to(VENV_BIN.parent)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], check=False, cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


def test_readme_names_the_two_setup_commands():
    assert "make run" in README and "make test" in README


def test_readme_rest_examples_work_against_serve(tmp_path, human_documents):
    docs = shuffled_human(human_documents, 7)
    write_jsonl(tmp_path / "human.jsonl", docs[:300])
    port = free_port()
    block = readme_block("rest").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = {"COLLAPSEWATCH_LOG_JSON": "1"}
    args = [str(VENV_BIN / "collapsewatch"), "serve", "--port", str(port)]
    with process(args, tmp_path / "serve.log", env=env, cwd=tmp_path) as serve:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120, proc=serve.popen)
        result = run_block(block, tmp_path)
        assert result.returncode == 0, result.stderr + serve.log()[-3000:]

        # the SDK snippet, as written, pushes one more output for the same model
        ingest_key = subprocess.run(
            [str(VENV_BIN / "collapsewatch"), "keys", "create", "--scope", "ingest",
             "--model", "chat-v3"], cwd=tmp_path, check=True, capture_output=True, text=True,
        ).stdout.strip()
        snippet = readme_block("sdk", "python").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        sdk = subprocess.run(
            [str(VENV_BIN / "python"), "-c",
             (f"INGEST_KEY = {ingest_key!r}\ncompletion_text = 'It ships on Monday.'\n"
             f"prompt = 'When does it ship?'\n{snippet}")],
            cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60)
        assert sdk.returncode == 0, sdk.stderr
        model_now = httpx.get(f"http://127.0.0.1:{port}/api/v1/models/chat-v3").json()
        assert model_now["samples_ingested"] == 2
    answers = json_objects(result.stdout)
    model, ingest, health, evaluations = answers
    assert model["name"] == "chat-v3" and model["window"]["size"] == 500
    assert ingest == {"accepted": 1, "duplicates": 0}
    assert health["health"] == "insufficient_data"
    assert evaluations["evaluations"] == []


@pytest.mark.slow
def test_readme_release_gate_passes_human_text_and_fails_degenerate_text(tmp_path,
                                                                         human_documents):
    docs = shuffled_human(human_documents, 11)
    write_jsonl(tmp_path / "human.jsonl", docs[:1500])
    write_jsonl(tmp_path / "current-model.jsonl", docs[1500:1900])
    write_jsonl(tmp_path / "candidate.jsonl", docs[1900:2300])
    block = readme_block("gate")
    result = run_block(block, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^health\s+(HEALTHY|EARLY_COLLAPSE)$", result.stdout, re.MULTILINE), result.stdout
    assert "what changed (against the baseline)" in result.stdout

    # a degenerate candidate: a handful of outputs repeated over and over, scored by the
    # block's score command against the reference and baseline the block just built
    write_jsonl(tmp_path / "candidate.jsonl", (docs[2300:2310] * 40))
    (tmp_path / ".venv").unlink()
    activate, score = block.splitlines()[0], block[block.index("collapsewatch score"):]
    result = run_block(f"{activate}\n{score}", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^health\s+COLLAPSE$", result.stdout, re.MULTILINE), result.stdout
    # the evidence names the repetition: ten groups of 40 identical outputs
    assert result.stdout.count("40 documents (10.0%)") == 5, result.stdout


def test_readme_collector_commands_answer_help():
    for command in (["collect", "openai", "--help"], ["collect", "tail", "--help"],
                    ["collect", "proxy", "--help"]):
        result = subprocess.run([str(VENV_BIN / "collapsewatch"), *command], check=False,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_readme_otel_collector_exporter_and_proxy_command_record_samples(
        service_env, tmp_path, monkeypatch, database_url):
    import yaml
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tests.collectors.harness import ApiServer, create_model, stored
    from tests.collectors.openai_upstream import openai_upstream

    ingest_key = create_model("chat-v3")
    api = ApiServer(service_env, tmp_path)
    api.start()
    try:
        # the Collector config block: its otlphttp exporter posts to <endpoint>/v1/traces with
        # the configured headers; the SDK's OTLP/HTTP exporter does the same from the same values
        config = yaml.safe_load(readme_block("otel", "yaml").replace("127.0.0.1:8000",
                                                                     api.url[7:]))
        exporter = config["exporters"]["otlphttp/collapsewatch"]
        assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp/collapsewatch"]
        headers = {k: v.replace("${env:COLLAPSEWATCH_INGEST_KEY}", ingest_key)
                   for k, v in exporter["headers"].items()}
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=exporter["endpoint"].rstrip("/") + "/v1/traces", headers=headers)))
        with provider.get_tracer("readme").start_as_current_span("chat chat-v3", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "chat-v3",
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                    {"type": "text", "content": "Traced answer."}]}])}):
            pass
        provider.shutdown()
        assert [r[1] for r in stored(database_url, "chat-v3")] == ["Traced answer."]

        # the proxy block, with the stand-in upstream for OpenAI and a free port
        port = free_port()
        monkeypatch.setenv("COLLAPSEWATCH_URL", api.url)
        with openai_upstream() as upstream:
            block = (readme_block("proxy").replace("https://api.openai.com/v1", upstream.base_url)
                     .replace("127.0.0.1:8088", f"127.0.0.1:{port}"))
            block += (
                'for i in $(seq 150); do curl -sf "$OPENAI_BASE_URL/models" >/dev/null && break; '
                "sleep 0.2; done\n"
                "python -c 'import openai; print(openai.OpenAI(api_key=\"sk-x\").chat.completions"
                ".create(model=\"gpt-4o\", messages=[{\"role\": \"user\", \"content\": \"hi\"}])"
                ".choices[0].message.content)'\n"
                "kill %1\nwait\n")
            result = run_block(block, tmp_path, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == upstream.answer_text("hi")
    finally:
        api.stop()
    # the proxy sends what it recorded before it exits
    assert [r[1] for r in stored(database_url, "chat-v3")][-1] == upstream.answer_text("hi")


def test_readme_security_key_commands_work(tmp_path):
    block = readme_block("security")
    done = run_block(block, tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cw_")
    assert any("operator" in line and "on-call pager" in line for line in lines)
    assert lines[-1].startswith("key 1 (operator) revoked at ")
    listed = subprocess.run([str(VENV_BIN / "collapsewatch"), "keys", "list", "--format", "json"],
                            check=True, cwd=tmp_path, text=True, capture_output=True)
    (key,) = json.loads(listed.stdout)["keys"]
    assert key["revoked_at"] and key["expires_at"] and key["active"] is False
    assert lines[0] not in listed.stdout + done.stdout.split("\n", 1)[1]
