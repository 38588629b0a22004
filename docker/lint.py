"""Checks docker/ as far as a machine without a Docker engine can (tests/e2e_packaging.rs runs it).

- hadolint passes on every Dockerfile;
- every build context, Dockerfile, COPY source, bind-mounted file, secret file, depended-on
  service and named volume of compose.yaml exists;
- the gateway image's build stage gets a source tree cargo accepts: the files its COPY lines
  take, alone in a folder, read by `cargo fetch` (which, unlike `cargo metadata`, checks every
  target the manifest declares: a bench the image left out broke its build once);
- the gateway's config loads with this dirbridge: `check --json` reports it valid, its
  /run/secrets paths and the volume's CA replaced by local stand-ins.

Usage: lint.py ROOT DIRBRIDGE HADOLINT. Prints what is wrong and exits 1, or prints "ok".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

problems = []


def problem(text):
    problems.append(text)


def copy_sources(dockerfile):
    """The sources of each COPY without --from, in order, as written."""
    out = []
    text = open(dockerfile).read().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
            continue
        out.extend(args[:-1])
    return out


def main(root, dirbridge, hadolint):
    docker = os.path.join(root, "docker")
    compose_path = os.path.join(docker, "compose.yaml")
    compose = yaml.safe_load(open(compose_path))
    services = compose.get("services") or {}
    if "dirbridge" not in services:
        problem("compose.yaml: no `dirbridge` service")
    gateway = None
    for name, svc in services.items():
        build = svc.get("build")
        if not build:
            if "image" not in svc:
                problem(f"compose.yaml: service {name} has neither build nor image")
            continue
        context = os.path.normpath(os.path.join(docker, build.get("context", ".")))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isdir(context):
            problem(f"compose.yaml: service {name}: build context {context} is not a folder")
            continue
        if not os.path.isfile(dockerfile):
            problem(f"compose.yaml: service {name}: {dockerfile} does not exist")
            continue
        lint = subprocess.run([hadolint, dockerfile], capture_output=True, text=True)
        if lint.returncode != 0:
            problem(f"hadolint {dockerfile}:\n{lint.stdout}{lint.stderr}")
        for src in copy_sources(dockerfile):
            if not os.path.exists(os.path.join(context, src)):
                problem(f"{dockerfile}: COPY {src}: no such file in the build context {context}")
        if name == "dirbridge":
            gateway = (context, dockerfile)
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                problem(f"compose.yaml: service {name} depends on {dep}, which is not a service")
        for s in svc.get("secrets") or []:
            if s not in (compose.get("secrets") or {}):
                problem(f"compose.yaml: service {name} uses secret {s}, which is not declared")
        for v in svc.get("volumes") or []:
            source = v.split(":")[0]
            if source.startswith(".") or source.startswith("/"):
                if not os.path.exists(os.path.join(docker, source)):
                    problem(f"compose.yaml: service {name} mounts {source}, which does not exist")
            elif source not in (compose.get("volumes") or {}):
                problem(f"compose.yaml: service {name} mounts volume {source}, which is not declared")
    for name, s in (compose.get("secrets") or {}).items():
        if not os.path.isfile(os.path.join(docker, s.get("file", ""))):
            problem(f"compose.yaml: secret {name}: {s.get('file')} does not exist")
    if gateway:
        build_stage(*gateway)
        config(services["dirbridge"], dirbridge)
    if problems:
        print("\n".join(problems))
        return 1
    print("ok")
    return 0


def build_stage(context, dockerfile):
    """The files the build stage copies, alone, make a manifest cargo reads."""
    with tempfile.TemporaryDirectory() as tmp:
        for src in copy_sources(dockerfile):
            path = os.path.join(context, src)
            if os.path.isdir(path):
                shutil.copytree(path, os.path.join(tmp, src), dirs_exist_ok=True)
            elif os.path.isfile(path):
                shutil.copy(path, os.path.join(tmp, src))
        if not os.path.isfile(os.path.join(tmp, "Cargo.toml")):
            problem(f"{dockerfile}: the build does not copy Cargo.toml")
            return
        host = re.search(
            r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M
        )
        meta = subprocess.run(
            # This machine's platform only: the others' crates are not in its cache.
            ["cargo", "fetch", "--offline", "--locked", "--target", host.group(1) if host else ""],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if meta.returncode != 0:
            problem(f"{dockerfile}: the files it copies are not a source tree cargo accepts:\n{meta.stderr}")


def config(service, dirbridge):
    """The config the gateway mounts loads: `check` says it is valid."""
    mounted = None
    for v in service.get("volumes") or []:
        parts = v.split(":")
        if len(parts) >= 2 and parts[1] == "/etc/dirbridge/dirbridge.toml":
            mounted = parts[0]
    if not mounted:
        problem("compose.yaml: the dirbridge service mounts no /etc/dirbridge/dirbridge.toml")
        return
    text = open(os.path.join(ROOT_DOCKER, mounted)).read()
    with tempfile.TemporaryDirectory() as tmp:
        secrets = os.path.join(tmp, "secrets")
        os.mkdir(secrets)
        for name in re.findall(r"/run/secrets/([A-Za-z0-9_.-]+)", text):
            with open(os.path.join(secrets, name), "w") as f:
                f.write("local-stand-in\n")
        text = text.replace("/run/secrets/", secrets + "/")
        # The CA the openldap container writes to the shared volume: a certificate of its own.
        for pem in set(re.findall(r'"(/etc/dirbridge/ldap-ca/[^"]+\.pem)"', text)):
            local = os.path.join(tmp, os.path.basename(pem))
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 os.path.join(tmp, "stand-in.key"), "-out", local, "-days", "1", "-subj", "/CN=stand-in"],
                capture_output=True,
                check=True,
            )
            text = text.replace(pem, local)
        text = re.sub(r'path = "/var/lib/dirbridge"', f'path = "{tmp}/state"', text)
        path = os.path.join(tmp, "dirbridge.toml")
        with open(path, "w") as f:
            f.write(text)
        run = subprocess.run([dirbridge, "--config", path, "check", "--json"], capture_output=True, text=True)
        try:
            first = json.loads(run.stdout)["checks"][0]
        except (ValueError, KeyError, IndexError):
            problem(f"dirbridge check printed no report for {mounted}:\n{run.stdout}{run.stderr}")
            return
        if first["check"] != "config" or first["level"] != "OK":
            problem(f"{mounted} does not load: {first['detail']}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    ROOT_DOCKER = os.path.join(sys.argv[1], "docker")
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
