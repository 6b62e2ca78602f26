"""Configuration: one TOML file + SWITCHBOARD_* environment + flags, and errors that name the key
(in the library and as `switchboard serve` exit code 2)."""
from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from switchboard.config import NOT_CONFIG, Config, ConfigError, load
from tests.support.rawflow import authed, direct, send
from tests.support.repo import tracked_files

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "s" * 40


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return str(path)


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, '[server]\nport = 1111\nhost = "0.0.0.0"\n[metrics]\nport = 9200\n')
    config = load(path, {"server.port": 3333},
                  environ={"SWITCHBOARD_SERVER_PORT": "2222", "SWITCHBOARD_METRICS_PORT": "9300",
                           "SWITCHBOARD_TLS_MIN_VERSION": "1.2", "SWITCHBOARD_LOG_LEVEL": "debug"})
    assert (config.server.port, config.server.host) == (3333, "0.0.0.0")
    assert (config.metrics.port, config.tls.min_version, config.log.level) == (9300, "1.2", "DEBUG")


CLUSTER = "[cluster]\nenabled = true\nredis = \"127.0.0.1:7000\"\n"


@pytest.mark.parametrize("text, environ, named", [
    ("[server]\nprot = 1\n", {}, "unknown config key 'server.prot'"),
    ("[sever]\nport = 1\n", {}, "unknown config section 'sever'"),
    ("", {"SWITCHBOARD_SERVER_PROT": "1"}, "'server.prot' (from $SWITCHBOARD_SERVER_PROT)"),
    ("[server]\nport = \"eighty\"\n", {}, "server.port: expected an integer, got 'eighty'"),
    ("", {"SWITCHBOARD_METRICS_ENABLED": "maybe"}, "metrics.enabled: expected a boolean"),
    # a typo in the section is as loud as one in the key
    ("", {"SWITCHBOARD_METRCS_PORT": "1"}, "unknown config section 'metrcs' (from "
                                           "$SWITCHBOARD_METRCS_PORT"),
    ("", {"SWITCHBOARD_PORT": "1"}, "unknown config section 'port'"),
    # quoted numbers and booleans in the file are refused, naming the key
    ("[server]\nport = \"23012\"\n", {}, "server.port: expected an integer, got '23012'"),
    ("[server]\nreuse_port = \"yes\"\n", {}, "server.reuse_port: expected a boolean"),
    ("[server]\nreuse_port = 1\n", {}, "server.reuse_port: expected a boolean"),
    ("[server]\nport = 80.0\n", {}, "server.port: expected an integer, got 80.0"),
    ("[server]\nport = true\n", {}, "server.port: expected an integer, got True"),
    ("[timers]\ntick = \"0.1\"\n", {}, "timers.tick: expected a number, got '0.1'"),
    ("[server]\nhost = 127\n", {}, "server.host: expected a string, got 127"),
    # environment values are parsed strictly: the whole string is one value
    ("", {"SWITCHBOARD_SERVER_PORT": " 80"}, "server.port: expected an integer, got ' 80'"),
    ("", {"SWITCHBOARD_SERVER_PORT": "8_0"}, "server.port: expected an integer"),
    ("", {"SWITCHBOARD_SERVER_PORT": "80.5"}, "server.port: expected an integer"),
    ("", {"SWITCHBOARD_TIMERS_TICK": "nan"}, "timers.tick: expected a number, got 'nan'"),
    ("", {"SWITCHBOARD_TIMERS_TICK": "inf"}, "timers.tick: expected a number"),
    ("", {"SWITCHBOARD_SERVER_REUSE_PORT": "y"}, "server.reuse_port: expected a boolean"),
    ("[server]\nport = 70000\n", {}, "server.port: value 70000 out of range"),
    ("[metrics]\nport = -1\n", {}, "metrics.port: value -1 out of range"),
    ("[server]\nstop_timeout = 0\n", {}, "server.stop_timeout"),
    ("[timers]\ntcp_keepalive_idle = 1.5\n", {}, "timers.tcp_keepalive_idle: expected an integer"),
    ("", {"SWITCHBOARD_TIMERS_TCP_KEEPALIVE_INTERVAL": "0"}, "timers.tcp_keepalive_interval"),
    ("[timers]\ntcp_keepalive_count = 128\n", {}, "timers.tcp_keepalive_count: value 128"),
    ("[timers]\ntcp_keepalive_idle = 10\ntcp_keepalive_interval = 20\n", {},
     "timers.tcp_keepalive_interval: value 20"),
    ("[tls]\nmin_version = \"1.1\"\n", {}, "tls.min_version: '1.1' is not one of 1.2, 1.3"),
    ("[tls]\ncert = \"/x.pem\"\n", {}, "tls.cert and tls.key"),
    ("[log]\nlevel = \"LOUD\"\n", {}, "log.level: 'LOUD'"),
    ("[log]\nformat = \"xml\"\n", {}, "log.format: 'xml'"),
    ("[auth]\nsecret = \"short\"\n", {}, "auth.secret: a signing key needs at least 32 bytes"),
    ("server = 1\n", {}, "server: expected a [server] table"),
    # the links between cluster nodes: all of TLS or none, a real secret, production closes them
    (CLUSTER + "mesh_tls_cert = \"/n.pem\"\n", {}, "set all three (TLS between nodes) or none"),
    (CLUSTER + "mesh_secret = \"short\"\n", {}, "cluster.mesh_secret: at least 32 bytes"),
    (CLUSTER + "redis_tls_ca = \"/ca.pem\"\n", {}, "cluster.redis_tls: set it"),
    (CLUSTER + "redis_username = \"sb\"\n", {}, "cluster.redis_username: needs"),
    (CLUSTER + "mesh_host = \"10.0.0.5\"\n[server]\nproduction = true\n[auth]\nsecret = \""
     + "k" * 32 + "\"\n", {}, "cluster.mesh_secret: required in production when the mesh "
                            "listens on 10.0.0.5"),
    ('[store]\nkind = "scylla"\nhosts = " , "\n', {}, "store.hosts: at least one"),
    ('[store]\nkind = "scylla"\nkeyspace = "my-ks"\n', {}, "store.keyspace: 'my-ks'"),
    ('[store]\nkind = "scylla"\nreplication_dcs = "dc1"\n', {},
     "store.replication_dcs: 'dc1' is not datacenter:factor"),
    ('[store]\nconsistency = "MOST"\n', {}, "store.consistency: 'MOST' is not one of"),
    ('[store]\nkind = "scylla"\ntls_cert = "/c.pem"\n', {}, "store.tls_cert and store.tls_key"),
    ('[store]\nkind = "scylla"\nport = 0\n', {}, "store.port: value 0 out of range"),
])
def test_errors_name_the_key(tmp_path, text, environ, named):
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, text), environ=environ)
    assert named in str(error.value)


def test_kernel_keepalive_of_client_connections_is_on_by_default_and_can_be_turned_off():
    probing = load(None, environ={}).tcp_keepalive
    assert (probing.idle, probing.interval, probing.count, probing.bound) == (180, 20, 3, 240)
    assert load(None, environ={"SWITCHBOARD_TIMERS_TCP_KEEPALIVE_IDLE": "0"}).tcp_keepalive is None


def test_environment_values_are_parsed_strictly_and_typed():
    config = load(None, environ={"SWITCHBOARD_SERVER_PORT": "+8080", "SWITCHBOARD_TIMERS_TICK": "5e-2",
                                 "SWITCHBOARD_SERVER_DRAIN_SPREAD": "3", "SWITCHBOARD_SERVER_REUSE_PORT": "Yes",
                                 "SWITCHBOARD_METRICS_ENABLED": "0", "SWITCHBOARD_FUZZ_SEED": "7"})
    assert (config.server.port, config.timers.tick, config.server.drain_spread) == (8080, 0.05, 3.0)
    assert config.server.reuse_port is True and config.metrics.enabled is False
    # and in the file, an integer is a fine float
    assert type(config.server.drain_spread) is float


def test_every_switchboard_variable_the_repository_uses_is_a_key_or_declared_not_config():
    """The rule for SWITCHBOARD_* names (config.NOT_CONFIG): a variable a test or tool reads
    that is no config key must be declared, or every `serve` it reaches stops with exit 2."""
    defaults = Config()
    keys = {f"SWITCHBOARD_{section.name}_{key.name}".upper()
            for section in dataclasses.fields(defaults)
            for key in dataclasses.fields(getattr(defaults, section.name))}
    used = set()
    for path in tracked_files():
        # bench/results keeps past runs as they were made, with the settings of their code
        if path.suffix in (".png", ".so") or path.is_relative_to(ROOT / "bench" / "results"):
            continue
        used |= set(re.findall(r"SWITCHBOARD_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    examples = {"SWITCHBOARD_METRCS_PORT", "SWITCHBOARD_SERVER_PROT", "SWITCHBOARD_PORT"}  # typos
    unknown = used - keys - NOT_CONFIG - examples
    assert not unknown, f"declare these in config.NOT_CONFIG or make them keys: {sorted(unknown)}"
    assert not NOT_CONFIG & keys


def test_file_errors_say_which_file(tmp_path):
    path = write(tmp_path, "[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=f"in {path}"):
        load(path, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(str(tmp_path / "missing.toml"), environ={})


def test_production_needs_a_signing_key(tmp_path):
    config = load(None, {"server.production": True, "server.data_dir": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match="auth.secret: required in production"):
        config.secret_bytes()
    assert not (tmp_path / "secret.key").exists()  # no dev key is generated in production


def test_secret_file(tmp_path):
    secret = tmp_path / "auth-secret"
    secret.write_text(GOOD_SECRET + "\n")
    config = load(None, {"server.production": True, "auth.secret_file": str(secret)}, environ={})
    assert config.secret_bytes() == GOOD_SECRET.encode()
    secret.write_text("short")
    with pytest.raises(ConfigError, match="auth.secret_file: .* holds under 32 bytes"):
        config.secret_bytes()
    config.auth.secret_file = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="auth.secret_file: cannot read"):
        config.secret_bytes()


def test_deploy_example_sets_every_key_and_loads():
    path = ROOT / "deploy" / "switchboard.toml"
    in_file = tomllib.loads(path.read_text())
    defaults = Config()
    every = {f.name: {g.name for g in dataclasses.fields(getattr(defaults, f.name))}
             for f in dataclasses.fields(Config)}
    assert {section: set(keys) for section, keys in in_file.items()} == every
    config = load(str(path), environ={})
    assert config.server.production and config.tls.min_version == "1.3"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "switchboard", *args], capture_output=True,
                          text=True, timeout=30, env=environ)


@pytest.mark.parametrize("toml, env, named", [
    ("[server]\nprot = 1\n", {}, "unknown config key 'server.prot'"),
    ("", {"SWITCHBOARD_WRITER_MAX_ROWS": "lots"}, "writer.max_rows: expected an integer"),
    ("", {"SWITCHBOARD_METRCS_PORT": "9999"}, "unknown config section 'metrcs'"),
    ('[server]\nport = "23012"\n', {}, "server.port: expected an integer, got '23012'"),
    ('[store]\nkind = "postgres"\n', {}, "store.kind: 'postgres' is not one of"),
    ("[server]\nproduction = true\n", {}, "auth.secret: required in production"),
    ('[tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n', {},
     "tls.cert/tls.key: cannot load /nonexistent/cert.pem"),
])
def test_serve_exits_2_naming_the_key(tmp_path, toml, env, named):
    path = write(tmp_path, toml)
    done = run_cli("serve", "--config", path, "--data-dir", str(tmp_path / "data"), "--port", "0",
                   env={"SWITCHBOARD_METRICS_PORT": "0", **env})
    assert done.returncode == 2, done
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_scylla_settings_come_from_the_store_section(tmp_path):
    from switchboard.core.stores import cql_settings, replication, tls_context
    config = load(write(tmp_path, '[store]\nkind = "scylla"\nhosts = "10.0.0.1, 10.0.0.2"\n'
                                  'port = 9142\nreplication_dcs = "eu:3,us:2"\n'
                                  'consistency = "quorum"\nlocal_dc = "eu"\n'), environ={})
    settings = cql_settings(config.store)
    assert (settings.hosts, settings.port, settings.keyspace) == (("10.0.0.1", "10.0.0.2"), 9142,
                                                                  None)
    assert (settings.consistency, settings.local_dc, settings.ssl_context) == ("QUORUM", "eu",
                                                                               None)
    assert replication(config.store) == "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 2}"
    config.store.tls_ca = str(ROOT / "tests" / "ops" / "missing-ca.pem")
    with pytest.raises(ConfigError, match="store.tls_ca"):  # at start, not at the first request
        tls_context(config.store)


async def test_store_section_chooses_the_store_the_gateway_opens(make_server, tmp_path):
    """kind = memory writes no file; kind = sqlite keeps its file at store.path when set."""
    for overrides, database in (({"store__kind": "memory"}, None),
                                ({"store__path": str(tmp_path / "elsewhere" / "chats.db")},
                                 tmp_path / "elsewhere" / "chats.db")):
        server = await make_server(**overrides)
        assert server.config.database.exists() is (database is not None)
        alice = await authed(server, "alice")
        chat = await direct(alice, "bob")
        assert (await send(alice, chat, b"hi")).seq == 1
        alice.close()
        await server.stop()
    assert not (tmp_path / "switchboard.db").exists()
    assert sqlite3.connect(database).execute("SELECT count(*) FROM messages").fetchone() == (1,)
