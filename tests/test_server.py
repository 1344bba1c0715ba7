"""The local `swift deploy` teacher: start, a real chat completion, stop, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import openai
import psutil
import pytest

from helpers.core.config import LOCAL_BATCH_SIZE, PROFILES, Settings
from helpers.models.loading import cpu_has_native_bf16
from helpers.teacher.server import LocalServer, ServerError, deploy_command, free_port, serving_precision_args


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_deploy_command_binds_loopback(settings, tmp_path):
    args = deploy_command(tmp_path, port=1234, api_key="k", served_model_name="t", settings=settings)
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--infer_backend") + 1] == "transformers"
    assert int(args[args.index("--max_batch_size") + 1]) > 1
    assert "--check_model" not in args  # swift deploy rejects it
    assert ("--template", "chatml") == tuple(args[args.index("--template"):args.index("--template") + 2])


ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu avx2 avx512f\n"


def _on(profile: str, tmp_path) -> Settings:
    return Settings(profile=PROFILES[profile], workspace=tmp_path, teacher=None, size="smoke")


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(ZEN4)
    assert cpu_has_native_bf16("flags : sse amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(OLD_CPU)
    assert not cpu_has_native_bf16("")


def test_serving_precision_follows_the_cpu(tmp_path):
    offline = _on("offline", tmp_path)
    assert serving_precision_args(offline, cpuinfo=ZEN4, env={}) == [
        "--torch_dtype", "bfloat16", "--attn_impl", "eager"]
    assert serving_precision_args(offline, cpuinfo=OLD_CPU, env={}) == ["--torch_dtype", "float32"]
    assert serving_precision_args(offline, cpuinfo=ZEN4, env={"COURSE_SERVE_DTYPE": "float32"}) == [
        "--torch_dtype", "float32"]
    with pytest.raises(ValueError, match="COURSE_SERVE_DTYPE"):
        serving_precision_args(offline, cpuinfo=ZEN4, env={"COURSE_SERVE_DTYPE": "fp8"})
    # On a GPU the profile's dtype and swift's default attention are used.
    assert serving_precision_args(_on("gpu", tmp_path), cpuinfo=OLD_CPU, env={}) == ["--torch_dtype", "bfloat16"]


def test_deploy_command_batches_what_the_clients_keep_in_flight(settings, tmp_path):
    args = deploy_command(tmp_path, port=1234, api_key="k", served_model_name="t", settings=settings)
    assert int(args[args.index("--max_batch_size") + 1]) == LOCAL_BATCH_SIZE
    assert settings.teacher_concurrency == (LOCAL_BATCH_SIZE if settings.teacher is None else 8)
    assert args.count("--torch_dtype") == 1


def test_not_a_model_folder(tmp_path, settings):
    with pytest.raises(ServerError, match="prepare_student"):
        LocalServer(tmp_path, settings=settings)


@pytest.mark.slow
def test_start_chat_stop_leaves_nothing(student, settings):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with LocalServer(student, settings=settings, max_batch_size=4) as server:
        pid = server.pid
        assert server.running()
        endpoint = server.endpoint
        assert endpoint.base_url.startswith("http://127.0.0.1:")
        assert server.api_key.reveal() not in repr(server)
        client = openai.OpenAI(**endpoint.client_kwargs(), max_retries=0)
        reply = client.chat.completions.create(
            model=endpoint.model, temperature=0, max_tokens=16,
            messages=[{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "What is 2 + 3?"}])
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens > 0
        # A wrong key is refused: the server is not open to anyone on the machine.
        bad = openai.OpenAI(base_url=endpoint.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:  # swift answers 400 "API key error"
            bad.chat.completions.create(model=endpoint.model, max_tokens=4,
                                        messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code in (400, 401) and "key" in str(refused.value).lower()
        listening = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == server.port
                     and c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
        raw_log = server.log_path.read_text(encoding="utf-8")  # the file itself, not the masked tail
        assert "DeployArguments" in raw_log and "****" in raw_log  # swift logs its arguments, key masked
        assert server.api_key.reveal() not in raw_log
    assert not server.running() and not _alive(pid)
    after = {p.pid for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert after <= before, f"stray processes: {after - before}"


@pytest.mark.slow
def test_server_dies_with_its_parent(student, tmp_path):
    """A kernel killed with SIGKILL must not leave the teacher running."""
    script = textwrap.dedent(f"""
        import sys, time
        from helpers.teacher.server import LocalServer
        server = LocalServer({str(student)!r}, max_batch_size=2).start()
        print(server.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "COURSE_WORKSPACE": str(tmp_path)})
    try:
        line = parent.stdout.readline()
        server_pid = int(line)
        assert _alive(server_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.time() + 30
    while _alive(server_pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(server_pid), "the server outlived the process that started it"


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_server_threads_leave_room_for_the_kernel():
    from helpers.teacher.server import server_threads

    assert server_threads(2, env={}) == 1 and server_threads(1, env={}) == 1 and server_threads(16, env={}) == 8


def test_server_threads_can_be_set_for_headless_runs():
    from helpers.teacher.server import SERVER_THREADS_ENV, server_threads

    assert server_threads(2, env={SERVER_THREADS_ENV: "2"}) == 2
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=SERVER_THREADS_ENV):
            server_threads(2, env={SERVER_THREADS_ENV: bad})
