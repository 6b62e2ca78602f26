"""The `switchboard` command as a newcomer and an operator meet it: a token minted where there
is no key, a server that cannot start (one line naming the path or the setting, exit 2, no
drain lines), options that explain themselves and are taken where they are written."""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard import cli
from switchboard.config import load
from switchboard.core.auth import TokenAuthority
from switchboard.core.store_sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40


def switchboard(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                wrap: list[str] = ()) -> subprocess.CompletedProcess:
    """`python -m switchboard ARGS` with no SWITCHBOARD_* variable but `env`'s."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    environ.update(env or {})
    return subprocess.run([*wrap, sys.executable, "-m", "switchboard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env=environ)


def refused(done: subprocess.CompletedProcess, *named: str) -> str:
    """A start that failed as an operator needs: exit 2, one line on stderr naming the thing
    to fix, no traceback, and no drain reported for a server that never served."""
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("switchboard: "), done.stderr
    for text in named:
        assert text in lines[0], done.stderr
    assert "listening on" not in done.stdout
    return lines[0]


# ---------------------------------------------------------------------- tokens
def test_token_outside_the_data_dir_creates_no_key_and_says_where_it_looked(tmp_path):
    done = switchboard("token", "--user", "alice", "--device", "phone", cwd=tmp_path)
    line = refused(done, "no signing key", str(tmp_path / "switchboard-data" / "secret.key"),
                   "--data-dir", "SWITCHBOARD_AUTH_SECRET_FILE")
    assert "eyJ" not in done.stdout + line  # no token printed
    assert list(tmp_path.iterdir()) == []   # and no key nor data dir made
    admin = switchboard("admin", "--data-dir", str(tmp_path / "d"), "token", "--user", "alice",
                        "--device", "phone")
    refused(admin, "no signing key")
    assert list(tmp_path.iterdir()) == []


def test_token_from_the_servers_data_dir_is_signed_with_its_key(tmp_path):
    data = tmp_path / "data"
    key = load(None, {"server.data_dir": str(data)}, environ={}).secret_bytes()  # as serve does
    done = switchboard("token", "--user", "alice", "--device", "phone", "--data-dir", str(data))
    assert done.returncode == 0, done
    principal = TokenAuthority(key).verify(done.stdout.strip())
    assert (principal.user_id, principal.device_id) == ("alice", "phone")


@pytest.mark.parametrize("ttl", ["-5", "0", "abc", "inf", "nan"])
def test_token_ttl_must_be_a_positive_number(tmp_path, ttl):
    done = switchboard("token", "--user", "a", "--device", "p", "--ttl", ttl,
                       env={"SWITCHBOARD_AUTH_SECRET": SECRET})
    assert done.returncode == 2 and "argument --ttl" in done.stderr, done
    assert done.stdout == ""


def test_account_service_example_in_deploy_readme_signs_a_token_the_server_accepts(tmp_path):
    readme = (ROOT / "deploy" / "README.md").read_text()
    [example] = [line.strip() for line in readme.splitlines()
                 if line.strip().startswith("python3 -c 'import jwt")]
    key_file = tmp_path / "auth-secret"
    key_file.write_text("bm90LWEtcmVhbC1rZXktYnV0LWxvbmctZW5vdWdoLWZvci10ZXN0cw==\n")
    command = example.replace("/etc/switchboard/auth-secret", str(key_file))
    done = subprocess.run(command.replace("python3", sys.executable, 1), shell=True,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    config = load(None, {"auth.secret_file": str(key_file)}, environ={})
    principal = TokenAuthority(config.secret_bytes()).verify(done.stdout.strip())
    assert (principal.user_id, principal.device_id) == ("alice", "phone")


# ---------------------------------------------------------------------- a server that cannot start
def serve(tmp_path: Path, data_dir: Path | str, *extra: str, env: dict[str, str] | None = None,
          wrap: list[str] = ()) -> subprocess.CompletedProcess:
    return switchboard("serve", "--data-dir", str(data_dir), "--port", "0", *extra, cwd=tmp_path,
                       env={"SWITCHBOARD_METRICS_PORT": "0", **(env or {})}, wrap=wrap)


def test_a_data_dir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "afile").write_text("")
    refused(serve(tmp_path, "afile"), "server.data_dir", "afile is not a directory")
    refused(serve(tmp_path, "afile/data"), "server.data_dir", "cannot create afile/data")


def without_root_override() -> list[str]:
    """A prefix that runs a command unable to write where its mode bits forbid: as root, with
    the capabilities that bypass them dropped (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory unwritable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("production", [False, True], ids=["dev", "production"])
def test_an_unwritable_data_dir(tmp_path, production):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    extra = ["--production"] if production else []
    env = {"SWITCHBOARD_AUTH_SECRET": SECRET} if production else {}
    wrap = without_root_override()
    refused(serve(tmp_path, locked, *extra, env=env, wrap=wrap), "server.data_dir",
            f"{locked} is not writable")
    refused(serve(tmp_path, locked / "data", *extra, env=env, wrap=wrap), "server.data_dir",
            f"cannot create {locked / 'data'}: Permission denied")


def test_a_database_that_cannot_be_opened_is_named(tmp_path):
    data = tmp_path / "data"
    (data / "switchboard.db").mkdir(parents=True)  # SQLite: "unable to open database file"
    line = refused(serve(tmp_path, data, "--production", env={"SWITCHBOARD_AUTH_SECRET": SECRET}),
                   "server.data_dir", str(data / "switchboard.db"))
    assert "unable to open database file" in line


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_client_port_in_use_names_server_port(tmp_path, busy_port):
    done = switchboard("serve", "--data-dir", str(tmp_path / "d"), "--port", str(busy_port),
                       env={"SWITCHBOARD_METRICS_PORT": "0", "SWITCHBOARD_LOG_LEVEL": "DEBUG"})
    refused(done, f"server.port: cannot listen on 127.0.0.1:{busy_port}", "in use")


def test_a_metrics_port_in_use_names_metrics_port(tmp_path, busy_port):
    done = serve(tmp_path, tmp_path / "d", env={"SWITCHBOARD_METRICS_PORT": str(busy_port),
                                                "SWITCHBOARD_LOG_LEVEL": "DEBUG"})
    refused(done, f"metrics.port: cannot listen on 127.0.0.1:{busy_port}", "in use")


# ---------------------------------------------------------------------- options
def every_parser(parser: argparse.ArgumentParser, path: str = "switchboard"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, f"{path} {name}")


def test_every_option_explains_itself():
    missing = [f"{path} {'/'.join(action.option_strings)}"
               for path, parser in every_parser(cli.parser()) for action in parser._actions
               if action.option_strings and not action.help]
    assert not missing


@pytest.mark.parametrize("args", [["serve", "--workers", "abc"], ["serve", "--workers", "0"],
                                  ["admin", "drain", "--pid", "x"],
                                  ["admin", "drain", "--pid", "1", "--timeout", "-1"],
                                  ["admin", "sessions", "--limit", "0"]])
def test_bad_numbers_are_refused_in_plain_words(args):
    done = switchboard(*args)
    assert done.returncode == 2, done
    message = done.stderr.strip().splitlines()[-1]
    assert re.search(r"argument --\w+: '?\S+'? is not a", message), message
    assert "_" not in message.partition(": error: ")[2], message  # no internal function names


def test_admin_options_work_before_and_after_the_subcommand(tmp_path):
    data = tmp_path / "data"

    async def create() -> None:
        store = SQLiteStore(data / "switchboard.db")
        await store.open()
        await store.close()
    asyncio.run(create())
    made = switchboard("admin", "chats", "create-group", "--creator", "alice", "--member", "bob",
                       "--data-dir", str(data), "--json")
    assert made.returncode == 0, made
    assert made.stdout.startswith("{")
    before = switchboard("admin", "--data-dir", str(data), "--json", "chats", "list", "--user", "bob")
    after = switchboard("admin", "chats", "list", "--user", "bob", "--json", "--data-dir", str(data))
    assert before.returncode == after.returncode == 0, (before, after)
    assert before.stdout == after.stdout and '"kind":"group"' in after.stdout
    # given in both places, the later one wins
    nowhere = switchboard("admin", "--data-dir", str(data), "chats", "list", "--user", "bob",
                          "--data-dir", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 1 and "nowhere" in nowhere.stderr


# ---------------------------------------------------------------------- a cluster from flags
def test_serve_help_shows_how_to_join_a_cluster():
    text = switchboard("serve", "--help").stdout
    for option in ("--redis", "--peers", "--node-name", "--node-id", "--mesh-host", "--mesh-port",
                   "--metrics-host", "--metrics-port", "SWITCHBOARD_CLUSTER_MESH_SECRET_FILE",
                   "SWITCHBOARD_CLUSTER_REDIS_PASSWORD_FILE", "SWITCHBOARD_STORE_KIND"):
        assert option in text, option


async def test_two_nodes_from_flags_alone_form_one_cluster(tmp_path, redis_cluster):
    """What deploy/README.md tells an operator to run on each host: flags for the node, the
    secrets in the environment; the two nodes register in Redis, link and share a ring."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_AUTH_SECRET=SECRET, SWITCHBOARD_CLUSTER_MESH_SECRET="m" * 40,
               SWITCHBOARD_CLUSTER_REDIS_PREFIX=f"cli{os.getpid()}", SWITCHBOARD_LOG_LEVEL="WARNING")
    procs = []
    try:
        for index, name in enumerate(("east", "west")):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard", "serve", "--data-dir", str(tmp_path / "d"),
                "--port", "0", "--node-name", name, "--node-id", str(index),
                "--mesh-host", "127.0.0.1", "--mesh-port", "0", "--metrics-port", "0",
                "--redis", ",".join(redis_cluster.addresses), env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        ports = []
        for proc in procs:
            while not (line := (await asyncio.wait_for(proc.stdout.readline(), 30)).decode())\
                    .startswith("switchboard metrics on"):
                assert line, "the node exited before it served"
            ports.append(int(line.rsplit(":", 1)[1].split("/")[0]))

        async def ring_sizes() -> list[float]:
            sizes = []
            for port in ports:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
                body = (await reader.read()).decode()
                writer.close()
                sizes += [float(line.split()[-1]) for line in body.splitlines()
                          if line.startswith("switchboard_cluster_ring_nodes ")]
            return sizes
        deadline = asyncio.get_running_loop().time() + 20
        while await ring_sizes() != [2.0, 2.0]:
            assert asyncio.get_running_loop().time() < deadline, await ring_sizes()
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
