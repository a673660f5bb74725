"""`mathtune deploy` as a user runs it: several adapters of one base chosen by name, the vllm backend's command and
its absence, bad flags in one line, and SIGTERM draining a request in flight in a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from serve_helpers import serve

from mathtune.cli import main
from mathtune.generate import Generator, Sampling

QUESTIONS = ["What is 2 + 3?", "Compute 12 * 7."]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir, lora_model) -> dict[str, Path]:
    """Two LoRA checkpoints of the tiny model with different non-zero weights, each recording its base."""
    import torch

    from mathtune.adapters import fingerprint, write_base_record

    root = tmp_path_factory.mktemp("adapters")
    made = {}
    for name, seed in (("alpha", 1), ("beta", 2)):
        model = lora_model(tiny_model_dir)
        torch.manual_seed(seed)
        for key, p in model.named_parameters():
            if "lora_B" in key:
                torch.nn.init.normal_(p, std=0.3)
        model.save_pretrained(root / name)
        write_base_record(root / name, tiny_model_dir, str(tiny_model_dir), fingerprint(tiny_model_dir))
        made[name] = root / name
    return made


def _local_answers(model_dir: Path, adapter: Path | None) -> list[str]:
    from mathtune.model import load_for_inference

    model, tokenizer, _ = load_for_inference(str(model_dir), str(adapter) if adapter else None, dtype="fp32")
    replies = Generator(model, tokenizer).generate([[{"role": "user", "content": q}] for q in QUESTIONS],
                                                   Sampling(10), progress=False)
    return [r[0] for r in replies]


def test_several_adapters_of_one_base(tiny_model_dir, adapters):
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    served = load_served(DeployArgs(adapters=tuple(f"{name}={path}" for name, path in adapters.items()),
                                    dtype="fp32", served_model_name="base"))  # the base from the adapters' record
    expected = {"base": _local_answers(tiny_model_dir, None),
                **{name: _local_answers(tiny_model_dir, path) for name, path in adapters.items()}}
    assert len({tuple(v) for v in expected.values()}) == 3, "the adapters should change the answers"
    with serve(served) as running:
        client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["base", "alpha", "beta"]
        for name in ("beta", "base", "alpha", "base"):  # switching back and forth
            got = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                                  temperature=0, max_tokens=10).choices[0].message.content
                   for q in QUESTIONS]
            assert got == expected[name], name


def test_an_adapter_checkpoint_as_the_model(tiny_model_dir, adapters, tmp_path, capsys):
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    served = load_served(DeployArgs(model=str(adapters["alpha"]), dtype="fp32"))
    assert list(served.names) == ["alpha"]  # a checkpoint-N folder would be named <run>-checkpoint-N
    expected = _local_answers(tiny_model_dir, adapters["alpha"])
    with serve(served) as running:
        client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        got = [client.chat.completions.create(model=next(iter(served.names)), temperature=0, max_tokens=10,
                                              messages=[{"role": "user", "content": q}]).choices[0].message.content
               for q in QUESTIONS]
    assert got == expected
    run = tmp_path / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    assert main(["deploy", "--adapters", f"a={run}"]) == 2
    assert "is a run folder, not a checkpoint; its checkpoints: checkpoint-5" in capsys.readouterr().err


def test_adapter_of_another_base_is_refused(tmp_path, tiny_model_dir, adapters):
    other = tmp_path / "other"
    other.mkdir()
    for file in (adapters["alpha"]).iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    record = json.loads((other / "mathtune_base.json").read_text())
    (other / "mathtune_base.json").write_text(json.dumps({**record, "fingerprint": "0" * 16}))
    code = main(["deploy", "--model", str(tiny_model_dir), "--adapters", f"a={adapters['alpha']}", f"b={other}"])
    assert code == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--adapters", "no-equals-sign"], "expected NAME=CHECKPOINT"),
    (["--adapters", "a=/x", "a=/y"], "given twice"),
    (["--port", "70000"], "--port must be 0-65535"),
    (["--api_key", " "], "--api_key is empty"),
    (["--max_queue", "0"], "must be positive"),
    (["--adapters", "a=/does/not/exist"], "no adapter_config.json"),
    (["--infer_backend", "vllm"], "vllm is not installed"),
])
def test_bad_deploy_flags_in_one_line(capsys, argv, message):
    assert main(["deploy", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("mathtune deploy: error:")


def test_a_taken_port_fails_before_the_model_loads(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = time.monotonic()
        assert main(["deploy", "--port", str(taken.getsockname()[1]), "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mathtune deploy: error: cannot listen on 127.0.0.1:") and len(err.splitlines()) == 1
    assert time.monotonic() - started < 5


def test_vllm_command_serves_the_same_names(tiny_model_dir, adapters):
    from mathtune.serve import vllm_command
    from mathtune.serve.config import DeployArgs

    command = vllm_command(DeployArgs(model=str(adapters["alpha"]), adapters=(f"beta={adapters['beta']}",),
                                      port=9001, api_key="k", dtype="bf16"))
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == str(tiny_model_dir)
    assert command[command.index("--lora-modules") + 1 :] == [f"alpha={adapters['alpha']}",
                                                               f"beta={adapters['beta']}"]
    assert "--enable-lora" in command and command[command.index("--port") + 1] == "9001"
    assert command[command.index("--dtype") + 1] == "bfloat16" and "k" not in command  # the key goes by env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_drains_the_request_in_flight(tiny_model_dir):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mathtune", "deploy", "--model", str(tiny_model_dir),
                                "--port", str(port), "--dtype", "fp32", "--served_model_name", "tiny"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.2)
        with httpx.Client() as keep_alive:  # one connection: replies must not wait for delayed ACKs (~40 ms)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                keep_alive.get(base + "/health")
                times.append(time.perf_counter() - started)
            assert sorted(times)[3] < 0.035, times  # with the stall every one takes 40 ms or more
        body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 480,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        lines = []
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line and not lines:
                    process.send_signal(signal.SIGTERM)  # mid-reply
                lines.append(line)
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 480  # answered to the end
        assert process.wait(60) == 0
        with pytest.raises(httpx.TransportError):  # and gone
            httpx.get(base + "/health", timeout=1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_vllm_names_an_adapter_checkpoint_as_the_pt_backend_does_and_the_base_apart(tmp_path, adapters):
    import shutil

    from mathtune.serve import vllm_command
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    checkpoint = tmp_path / "v3-20260101-000000" / "checkpoint-40"
    shutil.copytree(adapters["alpha"], checkpoint)
    for flag in ({}, {"served_model_name": "tuned"}):
        args = DeployArgs(model=str(checkpoint), dtype="fp32", **flag)
        command = vllm_command(args)
        (lora,) = command[command.index("--lora-modules") + 1 :]
        (pt_name,) = load_served(args).names
        assert lora == f"{pt_name}={checkpoint}"
        assert pt_name == flag.get("served_model_name", "v3-20260101-000000-checkpoint-40")
        assert command[command.index("--served-model-name") + 1] != pt_name, "base and adapter under one name"
